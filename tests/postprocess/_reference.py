"""Slow, straightforward reference implementations the production post-processing must match.

Not used by the package: the tests compare ``postprocess`` against these, bit for bit where the
production code promises it.

- :func:`reference_agglomerative`: the original's agglomerative init, loop by loop (O(n^3)).
- :func:`lockstep_agglomerative`: the former vectorised NumPy init (all regions merged in
  lockstep), whose NaN handling (zero weights, NaN means) the numba kernel reproduces.
- :func:`reference_collapse`: a plain per-region hard-EM loop on top of the reference init.
- :func:`reference_heat_map` / :func:`reference_regions`: the original's full-resolution heat map
  (one kernel painted at a time) and its regions with their K and members.
"""

import cv2
import numpy as np

from object_detector_retinanet.keras_retinanet.postprocess.mog import Mixture, e_step, m_step

# --- Mixture of Gaussians -----------------------------------------------------------------------


def reference_agglomerative(alpha, mu, cov, k):
    """Straightforward O(n^3) version of the original: argmin over the full (2n-k)^2 matrix."""
    n = len(alpha)
    a, m, c = list(alpha), [np.array(x, float) for x in mu], [np.array(x, float) for x in cov]
    live = list(range(n))
    while len(live) > k:
        best = None
        for ii, i in enumerate(live):
            for j in live[ii + 1 :]:
                d = float(np.sqrt(((m[i] - m[j]) ** 2).sum()))
                d = np.inf if d == 0 else d
                if best is None or d < best[0]:
                    best = (d, i, j)
        _, i, j = best
        b = a[i] + a[j]
        dm = m[i] - m[j]
        a.append(b)
        m.append((a[i] * m[i] + a[j] * m[j]) / b)
        c.append((a[i] * c[i] + a[j] * c[j] + a[i] * a[j] / b * np.outer(dm, dm)) / b)
        live = [x for x in live if x not in (i, j)] + [len(a) - 1]
    live.sort()
    return (
        np.array([a[x] for x in live]),
        np.array([m[x] for x in live]),
        np.array([c[x] for x in live]),
    )


def reference_collapse(alpha, mu, cov, k, max_iter):
    """Plain per-region hard EM (the original's loop) on top of the reference init.

    Returns:
        (status, iterations, (mu (k, 2), cov (k, 2, 2))).
    """
    beta, mc, cc = reference_agglomerative(alpha, mu, cov, k)
    init = (mc.copy(), cc.copy())
    d, delta, it = np.inf, np.inf, 0
    assign = None
    while delta > 1e-10 and it < max_iter:
        it += 1
        if assign is None:
            assign, _ = e_step(mu, cov, mc, cc)
        beta, mc, cc, _ = m_step(Mixture.of(alpha, mu, cov), assign, Mixture.of(beta, mc, cc))
        assign, mk = e_step(mu, cov, mc, cc)
        prev, d = d, float(np.dot(alpha, mk))
        delta = prev - d
        if delta < 0:
            return "not_monotonic", it, init
    if delta > 1e-10:
        return "not_converged", it, init
    return "converged", it, (mc, cc)


def lockstep_agglomerative(members, k):
    """The former NumPy agglomerative init, with the production signature.

    Args:
        members: Mixture (weights, means, covariances, regions).
        k: (G,) components per region.

    Returns:
        Mixture of the surviving components (as the production init).
    """
    members = Mixture.of(*members)
    n_regions = len(np.asarray(k).reshape(-1))
    return Mixture(*_agglomerative_core(*members, k, n_regions))


def _initial_neighbours(mu, region, local, n_g, rowmin, nn, row):
    """Nearest later neighbour (rowmin, nn) of every input member, all regions at once.

    Zero distances count as inf (QUIRK); among equal distances the first (smallest) slot wins.
    """
    per_row = n_g[region] - local - 1  # later members of each member
    rows = np.repeat(np.arange(region.size), per_row)
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


def _agglomerative_core(alpha, mu, cov, region, k, n_regions=None):
    """The agglomerative init of many independent regions at once (merges in lockstep).

    State: one row per region, one column per slot (inputs 0..n-1, merge number l in slot n + l).
    Rows are ordered by their merge count, most first, so the regions that are done are always the
    last rows and the working arrays are plain leading slices; only the slots in use (< n + l)
    are touched. Every row keeps, per slot, the nearest *later* live slot (rowmin, nn), so a round
    is one argmin per row, one vector of distances to the new component, and a recomputation of
    the rows whose neighbour was just merged.

    Args:
        alpha: (T,) weights. mu: (T, 2). cov: (T, 2, 2).
        region: (T,) region id of every member, non-decreasing (members of a region contiguous,
            in their order).
        k: (G,) components wanted per region.
        n_regions: G (default: region.max() + 1).

    Returns:
        (beta (K,), mu (K, 2), cov (K, 2, 2), region (K,)): per region min(n_g, k_g) components in
        the order of the production init, regions in increasing order.
    """
    alpha = np.asarray(alpha, dtype=np.float64)
    mu = np.asarray(mu, dtype=np.float64).reshape(-1, 2)
    cov = np.asarray(cov, dtype=np.float64).reshape(-1, 2, 2)
    region = np.asarray(region, dtype=np.int64)
    if n_regions is None:
        n_regions = int(region.max()) + 1 if region.size else 0
    if region.size == 0 or n_regions == 0:
        return alpha[:0], mu[:0], cov[:0], region[:0]
    n_g = np.bincount(region, minlength=n_regions)
    off = np.cumsum(n_g) - n_g
    k_g = np.maximum(np.asarray(k, dtype=np.int64).reshape(-1), 1)
    k_g = np.minimum(k_g, np.maximum(n_g, 1))
    merges = np.where(n_g > 0, n_g - k_g, 0)
    rows_g = np.argsort(-merges, kind="stable")
    rows_g = rows_g[n_g[rows_g] > 0]  # region of each state row, most merges first
    n_rows = rows_g.size
    n_slots = max(int((2 * n_g - k_g)[rows_g].max()), 1)
    row_of = np.full(n_regions, -1, dtype=np.int64)
    row_of[rows_g] = np.arange(n_rows)
    row = row_of[region]
    local = np.arange(region.size) - off[region]
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
    _initial_neighbours(mu, region, local, n_g, rowmin, nn, row)

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
    order = np.argsort(rows_g, kind="stable")  # state row of every region, regions ascending
    gg, ss = np.nonzero(live[order])
    out = st[order[gg], ss]
    return out[:, 0].copy(), out[:, 1:3].copy(), out[:, 3:7].reshape(-1, 2, 2), rows_g[order][gg]


# --- Heat map and regions -----------------------------------------------------------------------


def reference_heat_map(det, shape):
    """The original's full-resolution heat map, one kernel painted at a time (edge crop fixed)."""
    b = np.trunc(det[:, :4]).astype(int)
    heat = np.zeros(shape)
    for (x1, y1, x2, y2), c in zip(b, det[:, 4]):
        w, h = x2 - x1, y2 - y1
        ws, hs = int(w * 0.25), int(h * 0.25)
        sx1, sy1, sx2, sy2 = x1 + ws, y1 + hs, x2 - ws, y2 - hs
        wp, hp = sx2 - sx1, sy2 - sy1
        if wp <= 0 or hp <= 0:
            continue
        gx = np.linspace(-wp / 2, wp / 2, wp) / (np.sqrt(2) * wp / 2)
        gy = np.linspace(-hp / 2, hp / 2, hp) / (np.sqrt(2) * hp / 2)
        xx, yy = np.meshgrid(gx, gy)
        k = np.exp(-(xx**2) - yy**2)
        cv2.normalize(k, k, 0, c, cv2.NORM_MINMAX)
        cx0, cy0 = max(sx1, 0), max(sy1, 0)
        cx1, cy1 = min(sx2, shape[1]), min(sy2, shape[0])
        if cx1 > cx0 and cy1 > cy0:
            heat[cy0:cy1, cx0:cx1] += k[cy0 - sy1 : cy1 - sy1, cx0 - sx1 : cx1 - sx1]
    return heat


def reference_regions(det, shape):
    """(rect, K, members) per valid region of the full-resolution original."""
    heat = reference_heat_map(det, shape)
    cv2.normalize(heat, heat, 0, 255, cv2.NORM_MINMAX)
    hm = cv2.threshold(cv2.convertScaleAbs(heat), 4, 255, cv2.THRESH_TOZERO)[1]
    b = np.trunc(det[:, :4]).astype(int)
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    cx, cy = b[:, 0] + w / 2, b[:, 1] + h / 2
    out = []
    for c in cv2.findContours(hm, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[-2]:
        x, y, rw, rh = cv2.boundingRect(c)
        mem = np.flatnonzero((x <= cx) & (cx <= x + rw) & (y <= cy) & (cy <= y + rh))
        if mem.size == 0 or rw <= 3 or rh <= 3:
            continue
        med = np.median((w[mem] * 0.5) * (h[mem] * 0.5))
        k = max(1, int(min(np.round(cv2.contourArea(c) / med), 100)))
        out.append(((x, y, rw, rh), k, tuple(mem)))
    return out
