"""Collapsing a mixture of Gaussians: the EM core of the EM-Merger (spec §10.4; paper §4.2).

Goldman et al. (CVPR 2019) reduce the N detection Gaussians of one heat-map blob to K components
by minimising the KL divergence between the two mixtures (after Goldberger & Roweis, 2005):
an agglomerative, moment-preserving initialisation followed by EM with hard assignments.

This module owns the maths (NumPy, optionally numba; no I/O; one module switch, USE_NUMBA):

- :func:`agglomerative_init`: merge the closest pair of means until ``k`` remain. Same merge order
  as the original's O(n^3) argmin over a full distance matrix, but with incrementally maintained
  nearest-neighbour distances (O(n^2) overall); :func:`agglomerative_init_batch` runs many
  independent groups (contours) in lockstep and finishes the last few in plain Python floats
  (the same operations in the same order: bit-for-bit the reference's results). When numba is
  importable, a compiled scalar kernel (:func:`_agglomerative_kernel`, ``cache=True``) does the
  same operations in the same order instead (~10x faster, identical bits); the NumPy path stays
  as the fallback and is selected with ``use_numba=False`` or ``USE_NUMBA = False``. The EM loop
  stays in NumPy: it needs ``np.log``, whose SIMD implementation differs from numba's libm
  ``log`` in the last bit for ~0.1-0.5 % of arguments on AVX-512 machines.
- :func:`gaussian_kl`: the original's diagonal-only KL (it omits the true KL's ``-1``, so two
  identical Gaussians give **1**, not 0; QUIRK, kept: with the weights summing to 1 this shifts the
  objective by exactly 1 and changes neither the assignments nor the convergence test).
- :func:`e_step` / :func:`m_step`: vectorised over all members.
- :func:`collapse` / :func:`collapse_batch`: the whole procedure (one group / many groups at once,
  identical per-group results) with a deterministic, injectable work budget that replaces the
  original's SIGALRM wall-clock timeouts (B13), and fallbacks whose messages match what is
  returned (B14). Groups whose hard assignment stopped changing are at a fixed point; their last
  (identical) iteration is accounted for without being recomputed.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np

try:  # optional accelerator (same results bit for bit; see _agglomerative_kernel)
    import numba

    # NUMBA_DISABLE_JIT=1 would turn the kernel into slow pure Python: use the NumPy path then.
    _HAVE_NUMBA = not numba.config.DISABLE_JIT
except ImportError:  # pragma: no cover - depends on the environment
    numba = None
    _HAVE_NUMBA = False

logger = logging.getLogger(__name__)

# Which implementation the batch functions use when their ``use_numba`` argument is None: the
# numba kernel when numba is importable, else the pure-NumPy path. Set it to False to force the
# NumPy path (e.g. ``mog.USE_NUMBA = False``); both give identical results.
USE_NUMBA: bool = _HAVE_NUMBA

# Message texts of the fallbacks (spec §10.4). B14: every "fallback" message returns the
# agglomerative parameters, including budget exhaustion (the original returned partial EM results).
MSG_NOT_MONOTONIC = "EM bug - not monotonic - using fallback"
MSG_NOT_CONVERGED = "EM did not converge - using fallback"
MSG_EM_BUDGET = "EM budget exhausted - using fallback (agglomerative parameters)"
MSG_INIT_BUDGET = "agglomerative init budget exhausted - caller falls back to NMS"


@dataclass(frozen=True)
class CollapseBudget:
    """Deterministic work budgets replacing the original's 3 s / 10 s timeouts (B13).

    Budgets count work, never wall-clock time, so results are reproducible on any machine, in any
    thread or process.
    """

    # Agglomerative init: cells of the original's (2n - k)^2 distance matrix that its argmin scans,
    # summed over the n - k merges, i.e. (n - k) * (2n - k)^2. 1e9 cells is about what the
    # original's 3 s timeout covered (it fired for blobs of roughly 600-800 members).
    init_work: float = 1e9
    # EM: member-component KL evaluations, n * k per E-step. The original's 10 s timeout was
    # practically never reached (20 iterations of n = 9999, k = 100 is 2e7).
    em_work: float = 1e8


@dataclass
class CollapseResult:
    """Outcome of :func:`collapse`.

    Attributes:
        beta: (K,) component weights, or None when the agglomerative budget was exhausted.
        mu: (K, 2) component means (local coordinates), or None.
        cov: (K, 2, 2) full component covariances, or None.
        status: one of "converged", "not_monotonic", "not_converged", "em_budget",
            "init_budget".
        iterations: EM iterations run.
        message: the fallback message logged, or None when EM converged.
    """

    beta: np.ndarray | None
    mu: np.ndarray | None
    cov: np.ndarray | None
    status: str
    iterations: int = 0
    message: str | None = None


def init_cost(n: int, k: int) -> float:
    """Work units of the agglomerative init for n members and k components (see CollapseBudget)."""
    if k >= n:
        return 0.0
    return float(n - k) * float(2 * n - k) ** 2


def init_costs(n: np.ndarray, k: np.ndarray) -> np.ndarray:
    """:func:`init_cost` for arrays of n and k (exact while the costs stay below 2**53)."""
    n = np.asarray(n, dtype=np.int64)
    k = np.asarray(k, dtype=np.int64)
    s = (2 * n - k).astype(np.float64)
    return np.where(k >= n, 0.0, (n - k).astype(np.float64) * (s * s))


def agglomerative_init(
    alpha: np.ndarray, mu: np.ndarray, cov: np.ndarray, k: int, use_numba: bool | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge the closest pair of components (Euclidean distance of means) until k remain.

    Exactly the merge order of the original (spec §10.4; implemented by
    :func:`agglomerative_init_batch` with one group): slots 0..n-1 hold the inputs, the merge
    number l goes into slot n + l, and each step takes the pair (i < j) with the smallest distance,
    the first in row-major (i, j) order among ties. QUIRK: a zero distance counts as +inf, so two
    components with identical centres are never merged directly. Fix of a latent crash: when only
    identical-centre pairs are left, the original merged a component with an empty slot (NaN
    means); here the first remaining pair is merged instead.

    Args:
        alpha: (n,) weights.
        mu: (n, 2) means.
        cov: (n, 2, 2) covariances.
        k: number of components to keep (1 <= k).
        use_numba: as :func:`agglomerative_init_batch` (None -> :data:`USE_NUMBA`).

    Returns:
        (beta (k,), mu (k, 2), cov (k, 2, 2)), surviving inputs in input order first, then the
        merged components in creation order (as the original).
    """
    alpha = np.asarray(alpha, dtype=np.float64)
    n = alpha.shape[0]
    beta, m, c, _ = agglomerative_init_batch(
        alpha, mu, cov, np.zeros(n, dtype=np.int64), [max(int(k), 1)], 1, use_numba)
    return beta, m, c


def gaussian_kl(
    mu_f: np.ndarray, cov_f: np.ndarray, mu_g: np.ndarray, cov_g: np.ndarray
) -> np.ndarray:
    """Diagonal-only KL(f_t || g_j) + 1, for every member t and component j (spec §10.4).

    KL_tj = ln(sg_x / sf_x) + ln(sg_y / sf_y) + (sf_x^2 + dx^2) / (2 sg_x^2)
    + (sf_y^2 + dy^2) / (2 sg_y^2). QUIRK: only the diagonals of both covariances are used (the
    components' are full), and the true KL's constant -1 is dropped, so identical Gaussians give 1.

    Args:
        mu_f: (n, 2) member means. cov_f: (n, 2, 2) member covariances.
        mu_g: (k, 2) component means. cov_g: (k, 2, 2) component covariances.

    Returns:
        (n, k) float64.
    """
    vf = np.stack([cov_f[:, 0, 0], cov_f[:, 1, 1]], axis=1)  # (n, 2)
    vg = np.stack([cov_g[:, 0, 0], cov_g[:, 1, 1]], axis=1)  # (k, 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_ratio = np.log(np.sqrt(vg)[None, :, :] / np.sqrt(vf)[:, None, :]).sum(axis=2)
        delta2 = (mu_f[:, None, :] - mu_g[None, :, :]) ** 2
        div = ((vf[:, None, :] + delta2) / (2.0 * vg[None, :, :])).sum(axis=2)
    return div + log_ratio


def e_step(
    mu: np.ndarray, cov: np.ndarray, mu_c: np.ndarray, cov_c: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Hard assignment of every member to the component of smallest KL (first on ties).

    The component weights are not used (QUIRK, as the original).

    Returns:
        (assignment (n,) int64, min KL (n,) float64).
    """
    kl = gaussian_kl(mu, cov, mu_c, cov_c)
    assign = kl.argmin(axis=1)
    return assign, kl[np.arange(kl.shape[0]), assign]


def m_step(
    alpha: np.ndarray,
    mu: np.ndarray,
    cov: np.ndarray,
    assign: np.ndarray,
    beta: np.ndarray,
    mu_c: np.ndarray,
    cov_c: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Moment-matching update of the components that have members (others keep their values).

    beta_j = sum a_t; mu_j = sum a_t mu_t / beta_j;
    cov_j = sum a_t (cov_t + (mu_t - mu_j)(mu_t - mu_j)^T) / beta_j.

    Returns:
        New (beta (k,), mu_c (k, 2), cov_c (k, 2, 2)) arrays (inputs are not modified).
    """
    k = beta.shape[0]
    beta, mu_c, cov_c = beta.copy(), mu_c.copy(), cov_c.copy()
    counts = np.bincount(assign, minlength=k)
    has = counts > 0
    b = np.bincount(assign, weights=alpha, minlength=k)
    mx = np.bincount(assign, weights=alpha * mu[:, 0], minlength=k)
    my = np.bincount(assign, weights=alpha * mu[:, 1], minlength=k)
    with np.errstate(divide="ignore", invalid="ignore"):
        new_mu = np.stack([mx / b, my / b], axis=1)
    beta[has] = b[has]
    mu_c[has] = new_mu[has]
    d = mu - mu_c[assign]
    sxx = np.bincount(assign, weights=alpha * (cov[:, 0, 0] + d[:, 0] * d[:, 0]), minlength=k)
    sxy = np.bincount(assign, weights=alpha * (cov[:, 0, 1] + d[:, 0] * d[:, 1]), minlength=k)
    syx = np.bincount(assign, weights=alpha * (cov[:, 1, 0] + d[:, 1] * d[:, 0]), minlength=k)
    syy = np.bincount(assign, weights=alpha * (cov[:, 1, 1] + d[:, 1] * d[:, 1]), minlength=k)
    with np.errstate(divide="ignore", invalid="ignore"):
        new_cov = np.stack([np.stack([sxx, sxy], 1), np.stack([syx, syy], 1)], 1) / b[:, None, None]
    cov_c[has] = new_cov[has]
    return beta, mu_c, cov_c


def _ragged(counts: np.ndarray) -> np.ndarray:
    """Concatenation of arange(c) for every c in counts."""
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    return np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)


def _group_layout(group: np.ndarray, n_groups: int):
    counts = np.bincount(group, minlength=n_groups)
    return counts, np.cumsum(counts) - counts


def _initial_neighbours(mu, group, local, n_g, rowmin, nn, row):
    """Nearest later neighbour (rowmin, nn) of every input member, all groups at once.

    Zero distances count as inf (QUIRK); among equal distances the first (smallest) slot wins.
    """
    per_row = n_g[group] - local - 1  # later members of each member
    rows = np.repeat(np.arange(group.size), per_row)
    if rows.size == 0:
        return
    cols = rows + 1 + (np.arange(rows.size) - np.repeat(np.cumsum(per_row) - per_row, per_row))
    ex = mu[rows, 0] - mu[cols, 0]
    ey = mu[rows, 1] - mu[cols, 1]
    dd = np.sqrt(ex * ex + ey * ey)  # = sqrt(sum of squares); a 2-wide .sum(axis=1) is slow
    dd[dd == 0] = np.inf
    has = np.flatnonzero(per_row > 0)
    seg = np.cumsum(per_row) - per_row
    rmin = np.minimum.reduceat(dd, seg[has])
    rowmin[row[has], local[has]] = rmin
    hit = np.flatnonzero((dd == np.repeat(rmin, per_row[has])) & np.isfinite(dd))
    hr = rows[hit]
    first = hit[np.r_[True, hr[1:] != hr[:-1]]] if hit.size else hit  # first column per row
    nn[row[rows[first]], local[rows[first]]] = local[cols[first]]


# Lockstep rounds stop (and the last few groups finish in plain Python floats, where a round of
# ~50 small NumPy calls for 1-3 groups costs more than the scalar loop) at this many groups.
_SCALAR_TAIL_GROUPS = 3


def _agglomerative_core(alpha, mu, cov, group, k, n_groups=None):
    """:func:`agglomerative_init` for many independent groups at once (merges in lockstep).

    State: one row per group, one column per slot (inputs 0..n-1, merge number l in slot n + l).
    Rows are ordered by their merge count, most first, so the groups that are done are always the
    last rows and the working arrays are plain leading slices; only the slots in use (< n + l)
    are touched. Every row keeps, per slot, the nearest *later* live slot (rowmin, nn), so a round
    is one argmin per row, one vector of distances to the new component, and a recomputation of
    the rows whose neighbour was just merged. The last ``_SCALAR_TAIL_GROUPS`` groups finish in
    :func:`_finish_rows` (same arithmetic, Python floats).

    Args:
        alpha: (T,) weights. mu: (T, 2). cov: (T, 2, 2).
        group: (T,) group id of every member, non-decreasing (members of a group contiguous,
            in their order).
        k: (G,) components wanted per group.
        n_groups: G (default: group.max() + 1).

    Returns:
        (beta (K,), mu (K, 2), cov (K, 2, 2), group (K,)): per group min(n_g, k_g) components in
        the order of :func:`agglomerative_init`, groups in increasing order.
    """
    alpha = np.asarray(alpha, dtype=np.float64)
    mu = np.asarray(mu, dtype=np.float64).reshape(-1, 2)
    cov = np.asarray(cov, dtype=np.float64).reshape(-1, 2, 2)
    group = np.asarray(group, dtype=np.int64)
    n_groups = (int(group.max()) + 1 if group.size else 0) if n_groups is None else int(n_groups)
    if group.size == 0 or n_groups == 0:
        return alpha[:0], mu[:0], cov[:0], group[:0]
    n_g, off = _group_layout(group, n_groups)
    k_g = np.maximum(np.asarray(k, dtype=np.int64).reshape(-1), 1)
    k_g = np.minimum(k_g, np.maximum(n_g, 1))
    merges = np.where(n_g > 0, n_g - k_g, 0)
    rows_g = np.argsort(-merges, kind="stable")
    rows_g = rows_g[n_g[rows_g] > 0]  # group of each state row, most merges first
    n_rows = rows_g.size
    n_slots = max(int((2 * n_g - k_g)[rows_g].max()), 1)
    row_of = np.full(n_groups, -1, dtype=np.int64)
    row_of[rows_g] = np.arange(n_rows)
    row = row_of[group]
    local = np.arange(group.size) - off[group]
    # Slot state [a, mu_x, mu_y, c00, c01, c10, c11]; the means also live in (2, rows, slots)
    # for the distance pass, +inf for dead and unused slots (their distance is +inf).
    st = np.zeros((n_rows, n_slots, 7))
    st[row, local, 0] = alpha
    st[row, local, 1:3] = mu
    st[row, local, 3:7] = cov.reshape(-1, 4)
    mxy = np.full((2, n_rows, n_slots), np.inf)
    mxy[0, row, local] = mu[:, 0]
    mxy[1, row, local] = mu[:, 1]
    live = np.zeros((n_rows, n_slots), dtype=bool)
    live[row, local] = True
    rowmin = np.full((n_rows, n_slots), np.inf)
    nn = np.full((n_rows, n_slots), -1, dtype=np.int64)
    _initial_neighbours(mu, group, local, n_g, rowmin, nn, row)

    m_sorted = merges[rows_g]
    # Rows still merging in round t (merges > t), and the widest of them (slots < n + t in use).
    alive_at = np.searchsorted(-m_sorted, -np.arange(int(m_sorted[0]) + 1), side="left").tolist()
    n_max = np.maximum.accumulate(n_g[rows_g]).tolist()
    nxt = n_g[rows_g].astype(np.int64)  # next free slot l of every row
    base = np.arange(n_rows) * n_slots
    slot_idx = np.arange(n_slots)
    sf, rf, nf, lf = st.reshape(-1, 7), rowmin.reshape(-1), nn.reshape(-1), live.reshape(-1)
    xf, yf = mxy[0].reshape(-1), mxy[1].reshape(-1)
    inf = np.inf
    alive = n_rows
    t = 0
    while alive:
        na = alive_at[t] if t < len(alive_at) else 0  # rows with more than t merges
        if na < alive:
            alive = na
            nxt, base = nxt[:na], base[:na]
            if na == 0:
                break
        if na <= _SCALAR_TAIL_GROUPS:
            a_live = st[:na, :, 0][live[:na]]
            m_live = mxy[:, :na][:, live[:na]]
            if (a_live > 0).all() and np.isfinite(m_live).all():  # no NaN can appear
                _finish_rows(na, st, mxy, live, rowmin, nn, nxt.tolist(),
                             (nxt + m_sorted[:na] - t).tolist())
                break
        width = n_max[na - 1] + t  # slots in use are < l
        rm, nv = rowmin[:na, :width], nn[:na, :width]
        i = rm.argmin(axis=1)
        fi = base + i
        j = nf[fi]
        vmin = rf[fi]
        if not np.isfinite(vmin).all():
            # Only identical-centre pairs left: merge the first two live components (the original
            # merged with an empty slot and produced NaN means).
            deg = ~np.isfinite(vmin)
            lv = live[:na][deg].copy()
            first = lv.argmax(axis=1)
            lv[np.arange(lv.shape[0]), first] = False
            i, j = i.copy(), j.copy()
            i[deg], j[deg] = first, lv.argmax(axis=1)
            fi = base + i
        fj = base + j
        pi, pj = sf[fi], sf[fj]
        ai, aj = pi[:, 0:1], pj[:, 0:1]
        beta = ai + aj
        # new = (ai * p_i + aj * p_j) / beta: the mean, and (with + harmonic * dm dm^T) the
        # covariance of the merged component, in the original's operation order.
        new = ai * pi + aj * pj
        dm = pi[:, 1:3] - pj[:, 1:3]
        harmonic = (ai * aj) / beta
        new[:, 3:7] += harmonic * (dm[:, :, None] * dm[:, None, :]).reshape(-1, 4)
        new /= beta
        new[:, 0:1] = beta
        dead = np.concatenate([fi, fj])
        lf[dead] = False
        rf[dead] = inf
        nf[dead] = -1
        xf[dead] = inf
        diff = mxy[:, :na, :width] - new[:, 1:3].T[:, :, None]
        diff *= diff
        dnew = np.sqrt(diff[0] + diff[1])
        better = dnew < rm
        better &= dnew != 0  # QUIRK: a zero distance counts as inf
        np.copyto(rm, dnew, where=better)
        np.copyto(nv, nxt[:, None], where=better)
        # Rows whose neighbour is gone (and the new component is not nearer): recompute.
        stale = (nv == i[:, None]) | (nv == j[:, None])
        fl = base + nxt
        sf[fl] = new
        xf[fl] = new[:, 1]
        yf[fl] = new[:, 2]
        lf[fl] = True
        sidx = np.flatnonzero(stale)
        if sidx.size:
            sa, sr = np.divmod(sidx, width)
            diff = mxy[:, sa, :] - mxy[:, sa, sr][:, :, None]
            diff *= diff
            ds = np.sqrt(diff[0] + diff[1])
            ok = live[sa] & (slot_idx[None, :] > sr[:, None])
            ds[~ok | (ds == 0)] = inf
            p = ds.argmin(axis=1)
            v = ds[np.arange(p.size), p]
            rowmin[sa, sr] = v
            nn[sa, sr] = np.where(np.isfinite(v), p, -1)
        nxt += 1
        t += 1
    order = np.argsort(rows_g, kind="stable")  # state row of every group, groups ascending
    gg, ss = np.nonzero(live[order])
    out = st[order[gg], ss]
    return out[:, 0].copy(), out[:, 1:3].copy(), out[:, 3:7].reshape(-1, 2, 2), rows_g[order][gg]


def _finish_rows(n_rows, st, mxy, live, rowmin, nn, nxt, end):
    """Continue the merges of state rows 0..n_rows-1 up to slot end[r], in Python floats.

    The same operations in the same order as the vectorised rounds (IEEE double either way, and
    math.sqrt is correctly rounded like np.sqrt), so the results are bit for bit the same; only
    called when every live weight is > 0 and every mean finite (no NaN can arise).
    """
    inf = math.inf
    sqrt = math.sqrt
    for r in range(n_rows):
        a, x, y = st[r, :, 0].tolist(), mxy[0, r].tolist(), mxy[1, r].tolist()
        c0, c1, c2, c3 = (st[r, :, q].tolist() for q in (3, 4, 5, 6))
        rm, nb = rowmin[r].tolist(), nn[r].tolist()
        lv = np.flatnonzero(live[r]).tolist()  # live slots, ascending
        for new in range(nxt[r], end[r]):
            i = min(lv, key=rm.__getitem__)  # first row with the smallest distance
            if rm[i] == inf:
                i, j = lv[0], lv[1]
            else:
                j = nb[i]
            ai, aj = a[i], a[j]
            beta = ai + aj
            xi, xj, yi, yj = x[i], x[j], y[i], y[j]
            mx = (ai * xi + aj * xj) / beta
            my = (ai * yi + aj * yj) / beta
            h = (ai * aj) / beta
            dx, dy = xi - xj, yi - yj
            c0[new] = (ai * c0[i] + aj * c0[j] + h * (dx * dx)) / beta
            c1[new] = (ai * c1[i] + aj * c1[j] + h * (dx * dy)) / beta
            c2[new] = (ai * c2[i] + aj * c2[j] + h * (dy * dx)) / beta
            c3[new] = (ai * c3[i] + aj * c3[j] + h * (dy * dy)) / beta
            a[new], x[new], y[new] = beta, mx, my
            lv.remove(i)
            lv.remove(j)
            rm[i] = rm[j] = inf
            nb[i] = nb[j] = -1
            stale = []
            for s in lv:
                if nb[s] == i or nb[s] == j:
                    stale.append(s)
                    continue
                ex, ey = x[s] - mx, y[s] - my
                d = sqrt(ex * ex + ey * ey)
                if d < rm[s] and d != 0:
                    rm[s], nb[s] = d, new
            lv.append(new)
            for s in stale:
                best, arg = inf, -1
                xs, ys = x[s], y[s]
                for c in lv:
                    if c > s:
                        ex, ey = x[c] - xs, y[c] - ys
                        d = sqrt(ex * ex + ey * ey)
                        if d < best and d != 0:
                            best, arg = d, c
                rm[s], nb[s] = best, arg
        keep = np.zeros(live.shape[1], dtype=bool)
        keep[lv] = True
        live[r] = keep
        st[r, :, 0], st[r, :, 1], st[r, :, 2] = a, x, y
        st[r, :, 3], st[r, :, 4], st[r, :, 5], st[r, :, 6] = c0, c1, c2, c3


def _jit(fn):
    """numba.njit the kernel (cached on disk, GIL released, NumPy float semantics: x / 0 gives
    inf or NaN instead of raising) when numba is importable; else keep the Python function (only
    reachable then through an explicit call, the batch functions use the NumPy path)."""
    if not _HAVE_NUMBA:
        return fn
    return numba.njit(cache=True, nogil=True, error_model="numpy")(fn)


@_jit
def _agglomerative_kernel(alpha, mx_in, my_in, cv_in, starts, n_g, k_g,
                          out_a, out_m, out_c, out_g):  # pragma: no cover - compiled by numba
    """Scalar (numba) version of :func:`_agglomerative_core`, one group after the other.

    Every float operation is the one the vectorised rounds do for the same row, in the same
    order (no fastmath, so no reassociation or fused multiply-add): the results are equal bit for
    bit, NaN cases included (NumPy semantics: np.argmin returns the first NaN, np.minimum
    propagates NaN). Slots of a group: inputs 0..n-1, merge number l in slot n + l; per slot the
    nearest later live slot (rowmin, nn); a zero distance counts as inf (QUIRK).

    Args:
        alpha: (T,) weights. mx_in, my_in: (T,) means. cv_in: (T, 4) covariances (row-major).
        starts, n_g: (G,) first member and member count of every group.
        k_g: (G,) components kept per group, 1 <= k_g <= max(n_g, 1).
        out_a (K,), out_m (K, 2), out_c (K, 4), out_g (K,): filled with the surviving slots of
            every group in slot order, groups ascending (K = sum of k_g over non-empty groups).
    """
    inf = np.inf
    n_groups = starts.shape[0]
    max_s = 1
    for g in range(n_groups):
        max_s = max(max_s, 2 * n_g[g] - k_g[g])
    a = np.empty(max_s)
    x = np.empty(max_s)
    y = np.empty(max_s)
    c = np.empty((max_s, 4))
    live = np.zeros(max_s, dtype=np.bool_)
    rowmin = np.empty(max_s)
    nn = np.empty(max_s, dtype=np.int64)
    o = 0
    for g in range(n_groups):
        n = n_g[g]
        if n == 0:
            continue
        kk = k_g[g]
        n_slots = 2 * n - kk
        b0 = starts[g]
        for s in range(n_slots):
            live[s] = s < n
            rowmin[s] = inf
            nn[s] = -1
        for s in range(n):
            a[s] = alpha[b0 + s]
            x[s] = mx_in[b0 + s]
            y[s] = my_in[b0 + s]
            for q in range(4):
                c[s, q] = cv_in[b0 + s, q]
        # Nearest later neighbour of every input (_initial_neighbours: minimum.reduceat, which
        # propagates NaN, then the first column equal to a finite minimum).
        for s in range(n - 1):
            best = inf
            arg = -1
            has_nan = False
            for t in range(s + 1, n):
                ex = x[s] - x[t]
                ey = y[s] - y[t]
                d = math.sqrt(ex * ex + ey * ey)
                if d == 0:
                    d = inf
                if d != d:
                    has_nan = True
                elif d < best:
                    best = d
                    arg = t
            if has_nan:
                rowmin[s] = np.nan
            else:
                rowmin[s] = best
                nn[s] = arg
        nxt = n
        for _ in range(n - kk):
            # First row of the smallest rowmin (np.argmin: the first NaN wins).
            i = 0
            best = inf
            for s in range(nxt):
                v = rowmin[s]
                if v != v:
                    i = s
                    break
                if v < best:
                    best = v
                    i = s
            j = nn[i]
            if not math.isfinite(rowmin[i]):
                # Only identical-centre pairs left: merge the first two live components.
                i = -1
                for s in range(nxt):
                    if live[s]:
                        if i < 0:
                            i = s
                        else:
                            j = s
                            break
            if j < 0 or j == i:  # unreachable (>= k + 1 >= 2 live slots); guards the memory
                raise RuntimeError("agglomerative kernel: no pair to merge")
            ai = a[i]
            aj = a[j]
            beta = ai + aj
            xi, xj, yi, yj = x[i], x[j], y[i], y[j]
            nx = (ai * xi + aj * xj) / beta
            ny = (ai * yi + aj * yj) / beta
            h = (ai * aj) / beta
            dx = xi - xj
            dy = yi - yj
            c0 = (ai * c[i, 0] + aj * c[j, 0] + h * (dx * dx)) / beta
            c1 = (ai * c[i, 1] + aj * c[j, 1] + h * (dx * dy)) / beta
            c2 = (ai * c[i, 2] + aj * c[j, 2] + h * (dy * dx)) / beta
            c3 = (ai * c[i, 3] + aj * c[j, 3] + h * (dy * dy)) / beta
            live[i] = False
            live[j] = False
            rowmin[i] = inf
            rowmin[j] = inf
            nn[i] = -1
            nn[j] = -1
            for s in range(nxt):
                if live[s]:
                    ex = x[s] - nx
                    ey = y[s] - ny
                    d = math.sqrt(ex * ex + ey * ey)
                    if d < rowmin[s] and d != 0:
                        rowmin[s] = d
                        nn[s] = nxt
            a[nxt] = beta
            x[nxt] = nx
            y[nxt] = ny
            c[nxt, 0] = c0
            c[nxt, 1] = c1
            c[nxt, 2] = c2
            c[nxt, 3] = c3
            live[nxt] = True
            # Rows whose neighbour was merged (and the new component is not nearer): recompute
            # (np.argmin over the masked distances: first NaN, else first minimum).
            for s in range(nxt):
                if live[s] and (nn[s] == i or nn[s] == j):
                    best = inf
                    arg = -1
                    has_nan = False
                    for t in range(s + 1, nxt + 1):
                        if live[t]:
                            ex = x[t] - x[s]
                            ey = y[t] - y[s]
                            d = math.sqrt(ex * ex + ey * ey)
                            if d == 0:
                                d = inf
                            if d != d:
                                has_nan = True
                                break
                            if d < best:
                                best = d
                                arg = t
                    if has_nan:
                        rowmin[s] = np.nan
                        nn[s] = -1
                    else:
                        rowmin[s] = best
                        nn[s] = arg if best < inf else -1
            nxt += 1
        if o + kk > out_a.shape[0]:  # unreachable (n - (n - k) = k live slots); guards the memory
            raise RuntimeError("agglomerative kernel: output overflow")
        for s in range(n_slots):
            if live[s]:
                out_a[o] = a[s]
                out_m[o, 0] = x[s]
                out_m[o, 1] = y[s]
                for q in range(4):
                    out_c[o, q] = c[s, q]
                out_g[o] = g
                o += 1


def _agglomerative_numba(alpha, mu, cov, group, k, n_groups=None):
    """:func:`_agglomerative_core` through :func:`_agglomerative_kernel` (same results)."""
    # Always the same argument types (C-contiguous, aligned, writeable float64 / int64), so the
    # kernel has one specialisation: read-only or strided inputs would compile another one.
    alpha = np.require(alpha, np.float64, "CAW")
    mu = np.asarray(mu, dtype=np.float64).reshape(-1, 2)
    cov = np.require(np.asarray(cov, dtype=np.float64).reshape(-1, 4), np.float64, "CAW")
    group = np.asarray(group, dtype=np.int64)
    n_groups = (int(group.max()) + 1 if group.size else 0) if n_groups is None else int(n_groups)
    if group.size == 0 or n_groups == 0:
        return alpha[:0], mu[:0], cov[:0].reshape(-1, 2, 2), group[:0]
    n_g, off = _group_layout(group, n_groups)
    k_g = np.maximum(np.asarray(k, dtype=np.int64).reshape(-1), 1)
    k_g = np.minimum(k_g, np.maximum(n_g, 1))
    total = int(k_g[n_g > 0].sum())
    out_a, out_m = np.empty(total), np.empty((total, 2))
    out_c, out_g = np.empty((total, 4)), np.empty(total, dtype=np.int64)
    _agglomerative_kernel(alpha, np.require(mu[:, 0], None, "CAW"),
                          np.require(mu[:, 1], None, "CAW"), cov, np.require(off, np.int64, "CAW"),
                          np.require(n_g, np.int64, "CAW"), np.require(k_g, np.int64, "CAW"),
                          out_a, out_m, out_c, out_g)
    return out_a, out_m, out_c.reshape(-1, 2, 2), out_g


def warm_up() -> float:
    """Load the numba kernels now (compiling them if this machine has no cache yet).

    The first numba call of a process pays numba's own start-up (loading its typing and lowering
    registries, ~0.1-0.2 s) even when the compiled kernel comes from the on-disk cache; call this
    where that is free (e.g. while a model loads) to keep it off the first merge. A no-op
    without numba or with :data:`USE_NUMBA` off. Safe from any thread (numba serialises
    compilation behind its own lock).

    Returns:
        Seconds spent.
    """
    t = time.perf_counter()
    if _use_numba(None):
        cov = np.zeros((3, 2, 2))
        cov[:, 0, 0] = cov[:, 1, 1] = 1.0
        _agglomerative_numba(np.full(3, 1.0 / 3.0), np.array([[0.0, 0.0], [1.0, 0.0], [5.0, 0.0]]),
                             cov, np.zeros(3, dtype=np.int64), [1], 1)
    return time.perf_counter() - t


def _use_numba(use_numba):
    """Resolve a ``use_numba`` argument (None -> the module switch USE_NUMBA)."""
    if use_numba is None:
        return USE_NUMBA and _HAVE_NUMBA
    if use_numba and not _HAVE_NUMBA:
        raise RuntimeError("use_numba=True but numba is not installed")
    return bool(use_numba)


def agglomerative_init_batch(alpha, mu, cov, group, k, n_groups=None, use_numba=None):
    """:func:`agglomerative_init` for many independent groups at once (see
    :func:`_agglomerative_core`; with numba, :func:`_agglomerative_kernel`, same results bit for
    bit).

    Args:
        alpha: (T,) weights. mu: (T, 2). cov: (T, 2, 2).
        group: (T,) group id of every member, non-decreasing (members of a group contiguous,
            in their order).
        k: (G,) components wanted per group.
        n_groups: G (default: group.max() + 1).
        use_numba: True -> the numba kernel (RuntimeError without numba), False -> NumPy,
            None -> the module switch :data:`USE_NUMBA`.

    Returns:
        (beta (K,), mu (K, 2), cov (K, 2, 2), group (K,)): per group min(n_g, k_g) components in
        the order of :func:`agglomerative_init`, groups in increasing order.
    """
    if _use_numba(use_numba):
        return _agglomerative_numba(alpha, mu, cov, group, k, n_groups)
    return _agglomerative_core(alpha, mu, cov, group, k, n_groups)


STATUS_CONVERGED = "converged"


def collapse_batch(alpha, mu, cov, group, k, max_iter=20, epsilon=1e-10, budget=None,
                   n_groups=None, use_numba=None):
    """:func:`collapse` for many independent groups at once (identical per-group results).

    Args:
        alpha: (T,) weights (summing to 1 within each group). mu: (T, 2). cov: (T, 2, 2).
        group: (T,) non-decreasing group ids. k: (G,) components per group (1 <= k < n_g).
        max_iter, epsilon, budget: as :func:`collapse`.
        n_groups: G (default: group.max() + 1).
        use_numba: agglomerative init through the numba kernel (identical results; see
            :func:`agglomerative_init_batch`; None -> :data:`USE_NUMBA`).

    Returns:
        (beta (K,), mu (K, 2), cov (K, 2, 2), comp_group (K,), status list[str] (G,),
        iterations (G,) int). Groups with status "init_budget" have no components.
    """
    budget = budget if budget is not None else CollapseBudget()
    alpha = np.asarray(alpha, dtype=np.float64)
    mu = np.asarray(mu, dtype=np.float64).reshape(-1, 2)
    cov = np.asarray(cov, dtype=np.float64).reshape(-1, 2, 2)
    group = np.asarray(group, dtype=np.int64)
    n_groups = (int(group.max()) + 1 if group.size else 0) if n_groups is None else int(n_groups)
    k = np.asarray(k, dtype=np.int64).reshape(-1)
    n_g, _ = _group_layout(group, n_groups)
    status = ["running"] * n_groups
    iters = np.zeros(n_groups, dtype=np.int64)
    cost = init_costs(n_g, k)
    over = cost > budget.init_work
    for g in np.flatnonzero(over):
        logger.warning("n=%d k=%d: %s", n_g[g], k[g], MSG_INIT_BUDGET)
        status[g] = "init_budget"
    keep_m = ~over[group]
    alpha, mu, cov, group = alpha[keep_m], mu[keep_m], cov[keep_m], group[keep_m]
    beta, mu_c, cov_c, cgrp = agglomerative_init_batch(alpha, mu, cov, group, k, n_groups,
                                                       use_numba)
    init = (beta.copy(), mu_c.copy(), cov_c.copy())
    if cgrp.size == 0:
        return (*init, cgrp, status, iters)
    kk, coff = _group_layout(cgrp, n_groups)
    # Every (member, component of its group) pair, member-major, components in order.
    per = kk[group]
    pm = np.repeat(np.arange(group.size), per)
    pc = coff[group][pm] + (np.arange(pm.size) - np.repeat(np.cumsum(per) - per, per))
    var_fx, var_fy = cov[pm, 0, 0], cov[pm, 1, 1]
    with np.errstate(invalid="ignore"):
        sd_fx, sd_fy = np.sqrt(var_fx), np.sqrt(var_fy)  # fixed over the iterations
    pairs_all = (pm, pc, var_fx, var_fy, sd_fx, sd_fy, mu[pm, 0], mu[pm, 1], pc - coff[group][pm],
                 np.cumsum(per) - per)

    def kl_min(mu_c, cov_c, pairs):
        """Hard E-step over the given pairs: (first argmin component, min KL) per member."""
        p_m, p_c, vfx, vfy, sfx, sfy, mfx, mfy, loc, seg = pairs
        # Per component first, then gathered per pair: the same values as per-pair sqrt / mean.
        vx, vy = cov_c[:, 0, 0], cov_c[:, 1, 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            sx, sy = np.sqrt(vx)[p_c], np.sqrt(vy)[p_c]
            dx = mfx - mu_c[p_c, 0]
            dy = mfy - mu_c[p_c, 1]
            kl = (np.log(sx / sfx) + np.log(sy / sfy)
                  + (vfx + dx * dx) / (2.0 * vx[p_c])
                  + (vfy + dy * dy) / (2.0 * vy[p_c]))
        kl[np.isnan(kl)] = np.inf
        mn = np.minimum.reduceat(kl, seg)
        # First component reaching the minimum, per member (pairs are member-major, components in
        # order, and every member has at least one hit since mn is taken over its own pairs).
        hit = np.flatnonzero(kl == mn[p_m])
        ph = p_m[hit]
        return loc[hit[np.r_[True, ph[1:] != ph[:-1]]]], mn

    def pairs_of(members):
        """The pair arrays restricted to the given (ascending) members."""
        cnt = per[members]
        sel = np.repeat(seg_all[members], cnt) + _ragged(cnt)
        sub = tuple(a[sel] for a in pairs_all[1:9])
        p_m = np.repeat(np.arange(members.size), cnt)
        return (p_m, *sub, np.cumsum(cnt) - cnt)

    seg_all = pairs_all[9]
    running = np.zeros(n_groups, dtype=bool)
    running[np.unique(group)] = True
    d_val = np.full(n_groups, np.inf)
    delta = np.full(n_groups, np.inf)
    used = np.zeros(n_groups)
    step = n_g.astype(np.float64) * kk
    use_em = np.zeros(n_groups, dtype=bool)
    # A group whose assignment did not change in an iteration is at a fixed point: the next
    # M-step reproduces its parameters bit for bit, so its E-step, and hence its objective, are
    # those of the last iteration (delta = 0). Such groups are "frozen": the loop below keeps
    # their bookkeeping (iterations, budget, status) exactly as if they were recomputed, but skips
    # their arithmetic.
    frozen = np.zeros(n_groups, dtype=bool)
    assign, min_kl = None, None
    while running.any():
        with np.errstate(invalid="ignore"):
            go_on = (delta > epsilon) & (iters < max_iter)
        done = running & ~go_on
        for g in np.flatnonzero(done):
            if delta[g] > epsilon:
                logger.warning("n=%d k=%d: %s", n_g[g], k[g], MSG_NOT_CONVERGED)
                status[g] = "not_converged"
            else:
                status[g] = STATUS_CONVERGED
                use_em[g] = True
        running &= go_on
        need = step * (2.0 if assign is None else 1.0)
        broke = running & (used + need > budget.em_work)
        for g in np.flatnonzero(broke):
            logger.warning("n=%d k=%d: %s", n_g[g], k[g], MSG_EM_BUDGET)
            status[g] = "em_budget"
        running &= ~broke
        if not running.any():
            break
        used[running] += need[running]
        iters[running] += 1
        if assign is None:
            assign, min_kl = kl_min(mu_c, cov_c, pairs_all)
        act = running & ~frozen
        act_m = act[group]
        if act_m.any():
            comp = coff[group] + assign
            nb, nm, nc = m_step(alpha[act_m], mu[act_m], cov[act_m], comp[act_m], beta, mu_c,
                                cov_c)
            upd = act[cgrp]
            beta[upd], mu_c[upd], cov_c[upd] = nb[upd], nm[upd], nc[upd]
            if act_m.all():
                new_assign, new_min = kl_min(mu_c, cov_c, pairs_all)
            else:
                members = np.flatnonzero(act_m)
                new_assign, new_min = kl_min(mu_c, cov_c, pairs_of(members))
            changed = np.bincount(group[act_m], weights=new_assign != assign[act_m],
                                  minlength=n_groups) > 0
            frozen |= act & ~changed
            assign[act_m] = new_assign
            min_kl[act_m] = new_min
        d_new = np.bincount(group, weights=alpha * min_kl, minlength=n_groups)
        with np.errstate(invalid="ignore"):
            delta = np.where(running, d_val - d_new, delta)
        d_val = np.where(running, d_new, d_val)
        bad = running & (delta < 0)
        for g in np.flatnonzero(bad):
            logger.warning("n=%d k=%d: %s", n_g[g], k[g], MSG_NOT_MONOTONIC)
            status[g] = "not_monotonic"
        running &= ~bad
    pick = use_em[cgrp]
    beta = np.where(pick, beta, init[0])
    mu_c = np.where(pick[:, None], mu_c, init[1])
    cov_c = np.where(pick[:, None, None], cov_c, init[2])
    return beta, mu_c, cov_c, cgrp, status, iters


_MESSAGES = {
    "not_monotonic": MSG_NOT_MONOTONIC,
    "not_converged": MSG_NOT_CONVERGED,
    "em_budget": MSG_EM_BUDGET,
    "init_budget": MSG_INIT_BUDGET,
}


def collapse(
    alpha: np.ndarray,
    mu: np.ndarray,
    cov: np.ndarray,
    k: int,
    max_iter: int = 20,
    epsilon: float = 1e-10,
    budget: CollapseBudget | None = None,
    use_numba: bool | None = None,
) -> CollapseResult:
    """Collapse n member Gaussians to k components: agglomerative init, then hard EM (spec §10.4).

    The loop runs while delta = d_prev - d > epsilon and fewer than ``max_iter`` iterations ran,
    where d = sum_t alpha_t min_j KL_tj; the first E-step is computed, later ones reuse the
    assignments of the previous objective (as the original's cache). Outcomes (messages go to this
    module's logger): converged -> EM parameters; delta < 0 -> agglomerative parameters;
    ``max_iter`` reached -> agglomerative parameters; EM budget exhausted -> agglomerative
    parameters (B14: the original's "EM Timeout - using fallback" returned the partial EM state);
    agglomerative budget exhausted -> all parameters None, and the caller falls back to NMS
    (spec §10.3).

    Args:
        alpha: (n,) member weights (summing to 1).
        mu: (n, 2) member means. cov: (n, 2, 2) member covariances.
        k: number of components, 1 <= k < n.
        max_iter: EM iteration cap (the merger uses 20; spec §10.1).
        epsilon: convergence threshold on delta (the merger uses 1e-10).
        budget: deterministic work budget (B13); None -> CollapseBudget().
        use_numba: as :func:`collapse_batch`.

    Returns:
        CollapseResult.
    """
    alpha = np.asarray(alpha, dtype=np.float64)
    n = alpha.shape[0]
    beta, mu_c, cov_c, _, status, iters = collapse_batch(
        alpha, mu, cov, np.zeros(n, dtype=np.int64), [k], max_iter, epsilon, budget, 1,
        use_numba)
    st = status[0]
    if st == "init_budget":
        return CollapseResult(None, None, None, st, 0, MSG_INIT_BUDGET)
    return CollapseResult(beta, mu_c, cov_c, st, int(iters[0]), _MESSAGES.get(st))
