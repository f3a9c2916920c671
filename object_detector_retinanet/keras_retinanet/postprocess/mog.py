"""Collapsing a mixture of Gaussians: the EM core of the EM-Merger (paper §4.2).

Goldman et al. (CVPR 2019) reduce the n detection Gaussians of one region to the K objects it
holds by minimising the KL divergence between the two mixtures (after Goldberger & Roweis, 2005):
an agglomerative, moment-preserving initialisation followed by EM with hard assignments. Every
function here works on the mixtures of many regions at once (a :class:`Mixture` carries the
region of each Gaussian); the single-region names are thin views of the same code:

- :func:`agglomerative_init_batch` / :func:`agglomerative_init`: merge the closest pair of means
  until K remain, in the original's merge order (a compiled numba kernel; docs/em-merger.md says
  why it is kept);
- :func:`gaussian_kl`: the original's diagonal-only KL (QUIRK: without the true KL's ``-1``);
- :func:`hard_e_step` / :func:`e_step` and :func:`m_step`: the two EM steps;
- :func:`collapse_batch` / :func:`collapse`: the whole procedure, with deterministic work budgets
  in place of the original's wall-clock timeouts, and fallbacks whose messages match what they
  return.

NumPy and numba; no I/O, no global state.
"""

from __future__ import annotations

import collections
import logging
import math
import time
from dataclasses import dataclass
from typing import NamedTuple

import numba
import numpy as np

from object_detector_retinanet.keras_retinanet.config import EmMergerConfig
from object_detector_retinanet.keras_retinanet.postprocess.arrays import (
    ragged_arange,
    segment_starts,
)

logger = logging.getLogger(__name__)

# Outcomes of a region's collapse, and the messages logged for the fallbacks. Every fallback
# returns the agglomerative parameters (the original returned the partial EM state on its EM
# timeout while saying "using fallback"), except an exhausted init budget, where the caller falls
# back to NMS.
CONVERGED = "converged"
NOT_MONOTONIC = "not_monotonic"
NOT_CONVERGED = "not_converged"
EM_BUDGET = "em_budget"
INIT_BUDGET = "init_budget"
MSG_NOT_MONOTONIC = "EM bug - not monotonic - using fallback"
MSG_NOT_CONVERGED = "EM did not converge - using fallback"
MSG_EM_BUDGET = "EM budget exhausted - using fallback (agglomerative parameters)"
MSG_INIT_BUDGET = "agglomerative init budget exhausted - caller falls back to NMS"
MESSAGES = {
    NOT_MONOTONIC: MSG_NOT_MONOTONIC,
    NOT_CONVERGED: MSG_NOT_CONVERGED,
    EM_BUDGET: MSG_EM_BUDGET,
    INIT_BUDGET: MSG_INIT_BUDGET,
}


@dataclass(frozen=True)
class CollapseBudget:
    """How far one region's collapse may go: work budgets and the EM stopping rule.

    The budgets count work, never wall-clock time, so results are the same on any machine, in any
    thread or process (the original used 3 s / 10 s SIGALRM timeouts; docs/em-merger.md).
    Defaults: :class:`EmMergerConfig`.
    """

    # Agglomerative init: (n - k) * (2n - k)^2 distance cells (see init_cost).
    init_work: float = EmMergerConfig.init_budget
    # EM: member-component KL evaluations, n * k per E-step.
    em_work: float = EmMergerConfig.em_budget
    # EM iterations at most.
    max_iter: int = EmMergerConfig.max_iter
    # EM stops once the objective improves by no more than this.
    epsilon: float = EmMergerConfig.epsilon

    @classmethod
    def from_config(cls, config: EmMergerConfig) -> CollapseBudget:
        """The budget an EmMergerConfig asks for."""
        return cls(config.init_budget, config.em_budget, config.max_iter, config.epsilon)


class Mixture(NamedTuple):
    """Weighted Gaussians of one or many regions (one row each, regions contiguous).

    Attributes:
        weight: (n,) weights (alpha for the members, beta for the components).
        mean: (n, 2) means (region-local coordinates).
        cov: (n, 2, 2) covariances.
        region: (n,) int64 region ids, non-decreasing.
    """

    weight: np.ndarray
    mean: np.ndarray
    cov: np.ndarray
    region: np.ndarray

    @classmethod
    def of(cls, weight, mean, cov, region=None) -> Mixture:
        """A float64 / int64 Mixture from array-likes; region None: one region (all 0)."""
        weight = np.asarray(weight, dtype=np.float64).reshape(-1)
        if region is None:
            region = np.zeros(weight.size, dtype=np.int64)
        mean = np.asarray(mean, dtype=np.float64).reshape(-1, 2)
        cov = np.asarray(cov, dtype=np.float64).reshape(-1, 2, 2)
        return cls(weight, mean, cov, np.asarray(region, dtype=np.int64).reshape(-1))

    def take(self, index: np.ndarray) -> Mixture:
        """The rows selected by a boolean mask or an index array."""
        return Mixture(self.weight[index], self.mean[index], self.cov[index], self.region[index])


class CollapsedBatch(NamedTuple):
    """Outcome of :func:`collapse_batch`: the components (regions with status "init_budget" have
    none), and per region (G,) its status and the EM iterations run."""

    weight: np.ndarray
    mean: np.ndarray
    cov: np.ndarray
    region: np.ndarray
    status: list
    iterations: np.ndarray

    @property
    def components(self) -> Mixture:
        return Mixture(self.weight, self.mean, self.cov, self.region)


@dataclass
class CollapseResult:
    """Outcome of :func:`collapse` (one region).

    Attributes:
        beta: (K,) component weights, or None when the agglomerative budget was exhausted.
        mu: (K, 2) component means (local coordinates), or None.
        cov: (K, 2, 2) full component covariances, or None.
        status: CONVERGED, NOT_MONOTONIC, NOT_CONVERGED, EM_BUDGET or INIT_BUDGET.
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
    """Work units of the agglomerative init for n members and k components.

    The original's argmin scans the (2n - k)^2 distance matrix once per merge, n - k times.
    """
    if k >= n:
        return 0.0
    return float(n - k) * float(2 * n - k) ** 2


def init_costs(n: np.ndarray, k: np.ndarray) -> np.ndarray:
    """:func:`init_cost` for arrays of n and k (exact while the costs stay below 2**53)."""
    n = np.asarray(n, dtype=np.int64)
    k = np.asarray(k, dtype=np.int64)
    side = (2 * n - k).astype(np.float64)
    return np.where(k >= n, 0.0, (n - k).astype(np.float64) * (side * side))


# --------------------------------------------------------------------------------------------
# Agglomerative initialisation (numba kernel)
# --------------------------------------------------------------------------------------------
#
# A region's Gaussians live in "slots": the n inputs in slots 0..n-1, merge number l in slot
# n + l. Each live slot keeps its nearest *later* live slot (nearest_dist, nearest), so finding
# the closest pair is one scan, and a merge only recomputes the slots whose nearest neighbour it
# consumed. QUIRK: a zero distance counts as +inf, so Gaussians with identical centres are never
# merged directly. NaN (from zero weights) follows np.argmin: the first NaN is the minimum.

_jit = numba.njit(cache=True, nogil=True, error_model="numpy")

# The slots of one region (arrays sized for the largest region, shared by all): weight, mean
# (x, y, separate so that the distance scans read contiguous memory), covariance [c00, c01, c10,
# c11], and the live / nearest-later-slot bookkeeping.
_Slots = collections.namedtuple("_Slots", "weight x y cov live nearest_dist nearest")


@_jit
def _distance(slots, s, x, y):  # pragma: no cover - compiled by numba
    """Distance from the mean of slot s to (x, y); 0 (identical centres) counts as +inf."""
    dx = slots.x[s] - x
    dy = slots.y[s] - y
    d = math.sqrt(dx * dx + dy * dy)
    return np.inf if d == 0 else d


@_jit
def _nearest_later(slots, s, end):  # pragma: no cover - compiled by numba
    """(distance, slot) of the nearest live slot in s+1..end-1, first on ties; (NaN, -1) when a
    distance is NaN, (inf, -1) when there is none."""
    best, arg = np.inf, -1
    for t in range(s + 1, end):
        if slots.live[t]:
            d = _distance(slots, s, slots.x[t], slots.y[t])
            if d != d:
                return np.nan, -1
            if d < best:
                best, arg = d, t
    return best, arg


@_jit
def _closest_pair(slots, end):  # pragma: no cover - compiled by numba
    """The pair to merge among slots 0..end-1: the slot with the smallest nearest distance (the
    first NaN, else the first minimum) and its nearest slot; the first two live slots when no
    distance is finite (only identical centres left: the original merged a slot with an empty one
    there)."""
    i, best = 0, np.inf
    for s in range(end):
        d = slots.nearest_dist[s]
        if d != d:
            i = s
            break
        if d < best:
            i, best = s, d
    if math.isfinite(slots.nearest_dist[i]):
        return i, slots.nearest[i]
    first = -1
    for s in range(end):
        if slots.live[s]:
            if first >= 0:
                return first, s
            first = s
    raise RuntimeError("agglomerative init: fewer than two live slots")  # unreachable


@_jit
def _merge_slots(slots, i, j, new):  # pragma: no cover - compiled by numba
    """Moment-preserving merge of slots i and j into slot new.

    beta = a_i + a_j; mu = (a_i mu_i + a_j mu_j) / beta;
    cov = (a_i cov_i + a_j cov_j + (a_i a_j / beta) dmu dmu^T) / beta (the original's order).
    """
    ai, aj = slots.weight[i], slots.weight[j]
    beta = ai + aj
    xi, xj, yi, yj = slots.x[i], slots.x[j], slots.y[i], slots.y[j]
    harmonic = (ai * aj) / beta
    dx, dy = xi - xj, yi - yj
    slots.weight[new] = beta
    slots.x[new] = (ai * xi + aj * xj) / beta
    slots.y[new] = (ai * yi + aj * yj) / beta
    cov = slots.cov
    cov[new, 0] = (ai * cov[i, 0] + aj * cov[j, 0] + harmonic * (dx * dx)) / beta
    cov[new, 1] = (ai * cov[i, 1] + aj * cov[j, 1] + harmonic * (dx * dy)) / beta
    cov[new, 2] = (ai * cov[i, 2] + aj * cov[j, 2] + harmonic * (dy * dx)) / beta
    cov[new, 3] = (ai * cov[i, 3] + aj * cov[j, 3] + harmonic * (dy * dy)) / beta
    for gone in (i, j):
        slots.live[gone] = False
        slots.nearest_dist[gone] = np.inf
        slots.nearest[gone] = -1


@_jit
def _agglomerate_region(slots, n, k):  # pragma: no cover - compiled by numba
    """Merge the closest pair of slots until k of the n inputs (in slots 0..n-1) remain; on
    return ``slots.live`` marks the survivors among slots 0..2n-k-1."""
    n_slots = 2 * n - k
    slots.live[:n] = True
    slots.live[n:n_slots] = False
    slots.nearest_dist[:n_slots] = np.inf
    slots.nearest[:n_slots] = -1
    for s in range(n - 1):
        slots.nearest_dist[s], slots.nearest[s] = _nearest_later(slots, s, n)
    for new in range(n, n_slots):
        i, j = _closest_pair(slots, new)
        _merge_slots(slots, i, j, new)
        x, y = slots.x[new], slots.y[new]
        for s in range(new):  # the new Gaussian may be the nearest later slot of any live one
            if slots.live[s]:
                d = _distance(slots, s, x, y)
                if d < slots.nearest_dist[s]:
                    slots.nearest_dist[s], slots.nearest[s] = d, new
        slots.live[new] = True
        for s in range(new):  # slots whose nearest slot was just merged away: recompute
            if slots.live[s] and (slots.nearest[s] == i or slots.nearest[s] == j):
                slots.nearest_dist[s], slots.nearest[s] = _nearest_later(slots, s, new + 1)


@_jit
def _agglomerate(weight, mean, cov, starts, counts, ks):  # pragma: no cover - compiled by numba
    """:func:`_agglomerate_region` for every region.

    Args:
        weight (T,), mean (T, 2), cov (T, 4): the members, regions contiguous.
        starts, counts, ks: (G,) first member, member count and components of every region.

    Returns:
        The survivors, regions ascending, slot order within: weight (K,), mean (K, 2), cov (K, 4)
        and region (K,).
    """
    total, most = 0, 1
    for r in range(counts.shape[0]):
        if counts[r] > 0:
            total += ks[r]
            most = max(most, 2 * counts[r] - ks[r])
    out_weight, out_mean = np.empty(total), np.empty((total, 2))
    out_cov, out_region = np.empty((total, 4)), np.empty(total, dtype=np.int64)
    slots = _Slots(
        np.empty(most),
        np.empty(most),
        np.empty(most),
        np.empty((most, 4)),
        np.empty(most, dtype=np.bool_),
        np.empty(most),
        np.empty(most, dtype=np.int64),
    )
    o = 0
    for r in range(counts.shape[0]):
        n, k = counts[r], ks[r]
        if n == 0:
            continue
        first = starts[r]
        slots.weight[:n] = weight[first : first + n]
        slots.x[:n] = mean[first : first + n, 0]
        slots.y[:n] = mean[first : first + n, 1]
        slots.cov[:n] = cov[first : first + n]
        _agglomerate_region(slots, n, k)
        for s in range(2 * n - k):
            if slots.live[s]:
                out_weight[o] = slots.weight[s]
                out_mean[o, 0] = slots.x[s]
                out_mean[o, 1] = slots.y[s]
                out_cov[o] = slots.cov[s]
                out_region[o] = r
                o += 1
    return out_weight, out_mean, out_cov, out_region


def agglomerative_init_batch(members: Mixture, k) -> Mixture:
    """Merge the closest pair of Gaussians of every region until its k remain.

    The original's merge order: each step merges the pair (i < j) with the smallest Euclidean
    distance between means, the first in row-major (slot) order among ties. QUIRK: a zero distance
    counts as +inf, so two Gaussians with identical centres are never merged directly. When only
    identical-centre pairs are left, the original merged a Gaussian with an empty slot (NaN means);
    here the first two live ones are merged instead.

    Args:
        members: the Gaussians, regions 0..G-1 contiguous.
        k: (G,) components wanted per region (clipped to 1..n).

    Returns:
        Mixture of min(n, k) components per non-empty region, regions ascending; within a region
        the surviving inputs in input order, then the merged components in creation order.
    """
    # C-contiguous float64 / int64 inputs, so the kernel has one compiled specialisation.
    weight = np.ascontiguousarray(members.weight, dtype=np.float64).reshape(-1)
    mean = np.ascontiguousarray(members.mean, dtype=np.float64).reshape(-1, 2)
    cov = np.ascontiguousarray(members.cov, dtype=np.float64).reshape(-1, 4)
    region = np.asarray(members.region, dtype=np.int64).reshape(-1)
    if region.size == 0:
        return Mixture(weight, mean, cov.reshape(-1, 2, 2), region)
    counts = np.bincount(region)
    ks = np.asarray(k, dtype=np.int64).reshape(-1)[: counts.size]
    if ks.size < counts.size:
        raise ValueError(f"agglomerative_init_batch: {counts.size} regions but {ks.size} k")
    ks = np.minimum(np.maximum(ks, 1), np.maximum(counts, 1))
    starts = segment_starts(counts)
    weight, mean, cov, region = _agglomerate(weight, mean, cov, starts, counts, ks)
    return Mixture(weight, mean, cov.reshape(-1, 2, 2), region)


def agglomerative_init(
    alpha: np.ndarray, mu: np.ndarray, cov: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`agglomerative_init_batch` for one region.

    Args:
        alpha: (n,) weights. mu: (n, 2) means. cov: (n, 2, 2) covariances.
        k: components to keep (1 <= k).

    Returns:
        (beta (k,), mu (k, 2), cov (k, 2, 2)).
    """
    beta, mean, cov, _ = agglomerative_init_batch(Mixture.of(alpha, mu, cov), [max(int(k), 1)])
    return beta, mean, cov


def warm_up() -> float:
    """Load (or, on a machine without numba's cache, compile) the kernel now.

    The first numba call of a process pays numba's own start-up (~0.1-0.2 s) even when the kernel
    comes from the on-disk cache; call this where that is free (e.g. while a model loads) to keep
    it off the first merge. Safe from any thread.

    Returns:
        Seconds spent.
    """
    start = time.perf_counter()
    cov = np.zeros((3, 2, 2))
    cov[:, 0, 0] = cov[:, 1, 1] = 1.0
    agglomerative_init(np.full(3, 1.0 / 3.0), [[0.0, 0.0], [1.0, 0.0], [5.0, 0.0]], cov, 1)
    return time.perf_counter() - start


# --------------------------------------------------------------------------------------------
# KL, E-step, M-step
# --------------------------------------------------------------------------------------------


class _Diagonal(NamedTuple):
    """What the diagonal-only KL reads of Gaussians: means, variances and standard deviations."""

    x: np.ndarray
    y: np.ndarray
    var_x: np.ndarray
    var_y: np.ndarray
    sd_x: np.ndarray
    sd_y: np.ndarray

    @classmethod
    def of(cls, mean: np.ndarray, cov: np.ndarray) -> _Diagonal:
        var_x, var_y = cov[..., 0, 0], cov[..., 1, 1]
        with np.errstate(invalid="ignore"):
            return cls(mean[..., 0], mean[..., 1], var_x, var_y, np.sqrt(var_x), np.sqrt(var_y))

    def take(self, index) -> _Diagonal:
        x, y, var_x, var_y, sd_x, sd_y = self
        return _Diagonal(x[index], y[index], var_x[index], var_y[index], sd_x[index], sd_y[index])


def _diagonal_kl(f: _Diagonal, g: _Diagonal) -> np.ndarray:
    """KL(f || g) + 1 from the diagonals, elementwise (broadcasting); see :func:`gaussian_kl`."""
    with np.errstate(divide="ignore", invalid="ignore"):
        dx = f.x - g.x
        dy = f.y - g.y
        return (
            np.log(g.sd_x / f.sd_x)
            + np.log(g.sd_y / f.sd_y)
            + (f.var_x + dx * dx) / (2.0 * g.var_x)
            + (f.var_y + dy * dy) / (2.0 * g.var_y)
        )


def gaussian_kl(
    mu_f: np.ndarray, cov_f: np.ndarray, mu_g: np.ndarray, cov_g: np.ndarray
) -> np.ndarray:
    """Diagonal-only KL(f_t || g_j) + 1, for every member t and component j.

    KL_tj = ln(sg_x / sf_x) + ln(sg_y / sf_y) + (sf_x^2 + dx^2) / (2 sg_x^2)
    + (sf_y^2 + dy^2) / (2 sg_y^2). QUIRK: only the diagonals of both covariances are used (the
    components' are full), and the true KL's constant -1 is dropped, so identical Gaussians give 1
    (docs/em-merger.md).
    With weights summing to 1 this shifts the EM objective by exactly 1 and changes neither the
    assignments nor the convergence test.

    Args:
        mu_f: (n, 2) member means. cov_f: (n, 2, 2) member covariances.
        mu_g: (k, 2) component means. cov_g: (k, 2, 2) component covariances.

    Returns:
        (n, k) float64.
    """
    f = _Diagonal.of(np.asarray(mu_f)[:, None], np.asarray(cov_f)[:, None])
    g = _Diagonal.of(np.asarray(mu_g)[None, :], np.asarray(cov_g)[None, :])
    return _diagonal_kl(f, g)


@dataclass(frozen=True)
class MemberPairs:
    """Every (member, component of its region) pair, member-major, components in order.

    Attributes:
        member: (P,) member of each pair (0-based position among the members it was built for).
        component: (P,) component of each pair (index into the components).
        local: (P,) the component's position within its region.
        start: (T,) first pair of every member.
        count: (T,) pairs of every member (the components of its region).
        members: (P,) the members' diagonals, one row per pair.
    """

    member: np.ndarray
    component: np.ndarray
    local: np.ndarray
    start: np.ndarray
    count: np.ndarray
    members: _Diagonal

    @classmethod
    def of(cls, members: Mixture, components_per_region: np.ndarray) -> MemberPairs:
        """The pairs of ``members`` with the components of their regions, which are laid out
        region by region with ``components_per_region`` (G,) of each."""
        count = components_per_region[members.region]
        member = np.repeat(np.arange(members.region.size), count)
        local = ragged_arange(count)
        component = segment_starts(components_per_region)[members.region][member] + local
        diagonal = _Diagonal.of(members.mean, members.cov).take(member)
        return cls(member, component, local, segment_starts(count), count, diagonal)

    def restricted_to(self, members: np.ndarray) -> MemberPairs:
        """The pairs of the given members (ascending indices), renumbered 0..len(members)-1."""
        count = self.count[members]
        pick = np.repeat(self.start[members], count) + ragged_arange(count)
        return MemberPairs(
            np.repeat(np.arange(members.size), count),
            self.component[pick],
            self.local[pick],
            segment_starts(count),
            count,
            self.members.take(pick),
        )


def hard_e_step(pairs: MemberPairs, components: Mixture) -> tuple[np.ndarray, np.ndarray]:
    """Hard assignment of every member to the component of its region with the smallest KL.

    The component weights are not used (QUIRK, as the original). A NaN KL counts as +inf.

    Args:
        pairs: the member-component pairs to evaluate.
        components: all components.

    Returns:
        (assignment (T,) int64: the first minimising component's position within the region,
        min KL (T,) float64), for the T members of ``pairs``.
    """
    component = _Diagonal.of(components.mean, components.cov).take(pairs.component)
    kl = _diagonal_kl(pairs.members, component)
    kl[np.isnan(kl)] = np.inf
    min_kl = np.minimum.reduceat(kl, pairs.start)
    # Pairs are member-major with the components in order, and every member has a pair reaching
    # its own minimum: the first hit of each member is its assignment.
    hit = np.flatnonzero(kl == min_kl[pairs.member])
    hit_member = pairs.member[hit]
    first = hit[np.r_[True, hit_member[1:] != hit_member[:-1]]]
    return pairs.local[first], min_kl


def e_step(
    mu: np.ndarray, cov: np.ndarray, mu_c: np.ndarray, cov_c: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`hard_e_step` for one region.

    Args:
        mu: (n, 2) member means. cov: (n, 2, 2) member covariances.
        mu_c: (k, 2) component means. cov_c: (k, 2, 2) component covariances.

    Returns:
        (assignment (n,) int64, min KL (n,) float64).
    """
    members = Mixture.of(np.ones(len(mu)), mu, cov)
    components = Mixture.of(np.ones(len(mu_c)), mu_c, cov_c)
    return hard_e_step(MemberPairs.of(members, np.array([len(mu_c)])), components)


def m_step(members: Mixture, assign: np.ndarray, components: Mixture) -> Mixture:
    """Moment-matching update of the components that have members (others keep their values).

    beta_j = sum a_t; mu_j = sum a_t mu_t / beta_j;
    cov_j = sum a_t (cov_t + (mu_t - mu_j)(mu_t - mu_j)^T) / beta_j.

    Args:
        members: the members (weights alpha).
        assign: (n,) component (index into ``components``) of every member.
        components: the current components.

    Returns:
        The updated components (new arrays; the inputs are not modified).
    """
    alpha, mu, cov = members.weight, members.mean, members.cov
    k = components.weight.shape[0]
    beta, mu_c, cov_c = components.weight.copy(), components.mean.copy(), components.cov.copy()
    has = np.bincount(assign, minlength=k) > 0

    def weighted_sum(values):
        return np.bincount(assign, weights=alpha * values, minlength=k)

    total = np.bincount(assign, weights=alpha, minlength=k)
    with np.errstate(divide="ignore", invalid="ignore"):
        new_mu = np.stack([weighted_sum(mu[:, 0]) / total, weighted_sum(mu[:, 1]) / total], axis=1)
    beta[has] = total[has]
    mu_c[has] = new_mu[has]
    d = mu - mu_c[assign]
    sxx = weighted_sum(cov[:, 0, 0] + d[:, 0] * d[:, 0])
    sxy = weighted_sum(cov[:, 0, 1] + d[:, 0] * d[:, 1])
    syx = weighted_sum(cov[:, 1, 0] + d[:, 1] * d[:, 0])
    syy = weighted_sum(cov[:, 1, 1] + d[:, 1] * d[:, 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        sums = np.stack([np.stack([sxx, sxy], 1), np.stack([syx, syy], 1)], 1)
        new_cov = sums / total[:, None, None]
    cov_c[has] = new_cov[has]
    return Mixture(beta, mu_c, cov_c, components.region)


# --------------------------------------------------------------------------------------------
# The collapse
# --------------------------------------------------------------------------------------------


def _drop_over_init_budget(members: Mixture, k: np.ndarray, budget: CollapseBudget, status):
    """Mark the regions whose agglomerative init would exceed the budget; return the members of
    the others."""
    n = np.bincount(members.region, minlength=k.size)
    over = init_costs(n, k) > budget.init_work
    for r in np.flatnonzero(over):
        logger.warning("n=%d k=%d: %s", n[r], k[r], MSG_INIT_BUDGET)
        status[r] = INIT_BUDGET
    return members.take(~over[members.region])


def collapse_batch(members: Mixture, k, budget: CollapseBudget | None = None) -> CollapsedBatch:
    """Collapse the members of every region to its k components: agglomerative init, then EM.

    Per region, the loop runs while delta = d_prev - d > epsilon and fewer than max_iter
    iterations ran, where d = sum_t alpha_t min_j KL_tj; the first E-step is computed, later ones
    reuse the assignments of the previous objective (as the original's cache). Outcomes (messages
    go to this module's logger): converged -> EM parameters; delta < 0 -> agglomerative
    parameters; max_iter reached -> agglomerative parameters; EM budget exhausted -> agglomerative
    parameters; agglomerative budget exhausted -> no components (the caller falls back to NMS).

    A region whose hard assignment stopped changing is at a fixed point: its next M-step
    reproduces its parameters bit for bit, so its arithmetic is skipped while its bookkeeping
    (iterations, budget, status) goes on as if it were recomputed.

    Args:
        members: the Gaussians of regions 0..G-1 (weights summing to 1 within each region).
        k: (G,) components per region, 1 <= k < n.
        budget: work budgets and stopping rule; None -> CollapseBudget().

    Returns:
        CollapsedBatch.
    """
    budget = budget if budget is not None else CollapseBudget()
    members = Mixture.of(*members)
    k = np.asarray(k, dtype=np.int64).reshape(-1)
    n_regions = k.size
    n = np.bincount(members.region, minlength=n_regions)
    status = ["running"] * n_regions
    iterations = np.zeros(n_regions, dtype=np.int64)
    members = _drop_over_init_budget(members, k, budget, status)
    initial = agglomerative_init_batch(members, k)
    if initial.region.size == 0:
        return CollapsedBatch(*initial, status, iterations)
    em = _HardEm(members, initial, n_regions)
    running = np.zeros(n_regions, dtype=bool)
    running[np.unique(members.region)] = True
    objective = np.full(n_regions, np.inf)
    delta = np.full(n_regions, np.inf)
    work_done = np.zeros(n_regions)
    work_per_e_step = n.astype(np.float64) * em.components_per_region
    converged = np.zeros(n_regions, dtype=bool)

    def finish(regions, outcome):
        """Give the regions of a (G,) mask their final status and log its message."""
        if not regions.any():
            return
        for r in np.flatnonzero(regions).tolist():
            if outcome != CONVERGED:
                logger.warning("n=%d k=%d: %s", n[r], k[r], MESSAGES[outcome])
            status[r] = outcome

    while running.any():
        with np.errstate(invalid="ignore"):
            improving = delta > budget.epsilon  # False for a NaN delta, as the original's test
        finished = running & ~(improving & (iterations < budget.max_iter))
        converged |= finished & ~improving
        finish(finished & improving, NOT_CONVERGED)
        finish(finished & ~improving, CONVERGED)
        running &= ~finished
        need = work_per_e_step * (2.0 if em.assign is None else 1.0)  # the first needs two
        over_budget = running & (work_done + need > budget.em_work)
        finish(over_budget, EM_BUDGET)
        running &= ~over_budget
        if not running.any():
            break
        work_done[running] += need[running]
        iterations[running] += 1
        new_objective = em.iterate(running)
        with np.errstate(invalid="ignore"):
            delta = np.where(running, objective - new_objective, delta)
        objective = np.where(running, new_objective, objective)
        worse = running & (delta < 0)
        finish(worse, NOT_MONOTONIC)
        running &= ~worse
    use_em = converged[initial.region]
    weight = np.where(use_em, em.components.weight, initial.weight)
    mean = np.where(use_em[:, None], em.components.mean, initial.mean)
    cov = np.where(use_em[:, None, None], em.components.cov, initial.cov)
    return CollapsedBatch(weight, mean, cov, initial.region, status, iterations)


class _HardEm:
    """The EM state of all regions: the components and the members' current assignments."""

    def __init__(self, members: Mixture, initial: Mixture, n_regions: int):
        self.members = members
        self.components = Mixture(*(values.copy() for values in initial))
        self.components_per_region = np.bincount(initial.region, minlength=n_regions)
        self.first_component = segment_starts(self.components_per_region)
        self.pairs = MemberPairs.of(members, self.components_per_region)
        self.n_regions = n_regions
        self.assign = None  # (T,) position of each member's component within its region
        self.min_kl = None  # (T,)
        self.frozen = np.zeros(n_regions, dtype=bool)  # at a fixed point

    def iterate(self, running: np.ndarray) -> np.ndarray:
        """One EM iteration of the running regions; returns the objective d of every region."""
        region = self.members.region
        if self.assign is None:
            self.assign, self.min_kl = hard_e_step(self.pairs, self.components)
        active = running & ~self.frozen
        active_member = active[region]
        if active_member.any():
            component = self.first_component[region] + self.assign
            updated = m_step(
                self.members.take(active_member), component[active_member], self.components
            )
            update = active[self.components.region]
            for old, new in zip(self.components[:3], updated[:3]):
                old[update] = new[update]
            pairs = self.pairs
            if not active_member.all():
                pairs = pairs.restricted_to(np.flatnonzero(active_member))
            new_assign, new_min_kl = hard_e_step(pairs, self.components)
            changed = new_assign != self.assign[active_member]
            changed = np.bincount(region[active_member], changed, minlength=self.n_regions) > 0
            self.frozen |= active & ~changed  # unchanged assignments: a fixed point from here on
            self.assign[active_member] = new_assign
            self.min_kl[active_member] = new_min_kl
        return np.bincount(
            region, weights=self.members.weight * self.min_kl, minlength=self.n_regions
        )


def collapse(
    alpha: np.ndarray,
    mu: np.ndarray,
    cov: np.ndarray,
    k: int,
    budget: CollapseBudget | None = None,
) -> CollapseResult:
    """Collapse the n member Gaussians of one region to k components (:func:`collapse_batch`).

    Args:
        alpha: (n,) member weights (summing to 1).
        mu: (n, 2) member means. cov: (n, 2, 2) member covariances.
        k: number of components, 1 <= k < n.
        budget: work budgets and stopping rule; None -> CollapseBudget().

    Returns:
        CollapseResult (all parameters None when the agglomerative budget was exhausted).
    """
    batch = collapse_batch(Mixture.of(alpha, mu, cov), [k], budget)
    status = batch.status[0]
    if status == INIT_BUDGET:
        return CollapseResult(None, None, None, status, 0, MSG_INIT_BUDGET)
    iterations = int(batch.iterations[0])
    return CollapseResult(
        batch.weight, batch.mean, batch.cov, status, iterations, MESSAGES.get(status)
    )
