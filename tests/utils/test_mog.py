"""Tests of utils/mog.py: the MoG collapse of the EM-Merger (spec §10.4)."""

import logging

import numpy as np
import pytest

from object_detector_retinanet.keras_retinanet.utils import mog
from object_detector_retinanet.keras_retinanet.utils.mog import (
    CollapseBudget,
    agglomerative_init,
    agglomerative_init_batch,
    collapse,
    collapse_batch,
    e_step,
    gaussian_kl,
    init_cost,
    m_step,
)


def _diag(vx, vy):
    c = np.zeros((len(vx), 2, 2))
    c[:, 0, 0], c[:, 1, 1] = vx, vy
    return c


def _reference_agglomerative(alpha, mu, cov, k):
    """Straightforward O(n^3) version of the original: argmin over the full (2n-k)^2 matrix."""
    n = len(alpha)
    a, m, c = list(alpha), [np.array(x, float) for x in mu], [np.array(x, float) for x in cov]
    live = list(range(n))
    while len(live) > k:
        best = None
        for ii, i in enumerate(live):
            for j in live[ii + 1:]:
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
    return np.array([a[x] for x in live]), np.array([m[x] for x in live]), np.array(
        [c[x] for x in live])


def test_diagonal_kl_of_identical_gaussians_is_one():
    # QUIRK (documented): the original's formula drops the true KL's -1, so KL(f||f) = 1:
    # ln(1) + ln(1) + (s^2 + 0) / (2 s^2) + (s^2 + 0) / (2 s^2) = 0.5 + 0.5 = 1.
    mu = np.array([[3.0, 4.0]])
    cov = _diag([9.0], [25.0])
    assert gaussian_kl(mu, cov, mu, cov)[0, 0] == pytest.approx(1.0)


def test_diagonal_kl_hand_value_and_off_diagonal_ignored():
    # f: mu 0, var (1, 1); g: mu (1, 0), var (4, 1):
    # ln(2/1) + ln(1/1) + (1 + 1) / (2*4) + (1 + 0) / (2*1) = ln 2 + 0.25 + 0.5
    g_cov = np.array([[[4.0, 1.5], [1.5, 1.0]]])  # the off-diagonal must not matter (QUIRK)
    kl = gaussian_kl(np.zeros((1, 2)), _diag([1.0], [1.0]), np.array([[1.0, 0.0]]), g_cov)
    assert kl[0, 0] == pytest.approx(np.log(2) + 0.75)


def test_two_tight_pairs_collapse_to_two_means_at_pair_centroids():
    mu = np.array([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0], [11.0, 2.0]])
    alpha = np.full(4, 0.25)
    res = collapse(alpha, mu, _diag([1.0] * 4, [1.0] * 4), 2, max_iter=20, epsilon=1e-10)
    assert res.status == "converged"
    got = sorted(map(tuple, res.mu))
    assert got[0] == pytest.approx((0.5, 0.0))  # (0 + 1) / 2
    assert got[1] == pytest.approx((10.5, 1.0))  # ((10 + 11) / 2, (0 + 2) / 2)
    assert res.beta == pytest.approx([0.5, 0.5])
    # Moment matching: var_x of the first pair = 1 + 0.25 (spread of +-0.5) = 1.25.
    first = int(np.argmin(res.mu[:, 0]))
    assert res.cov[first, 0, 0] == pytest.approx(1.25)


def test_m_step_moments_by_hand():
    # Two members (weights 0.25, 0.75) at x = 0 and x = 4, var 1: mean 3, var 1 + 0.25*9 +
    # 0.75*1 = 4; the unused second component keeps its parameters.
    alpha = np.array([0.25, 0.75])
    mu = np.array([[0.0, 0.0], [4.0, 0.0]])
    beta, mu_c, cov_c = m_step(alpha, mu, _diag([1.0, 1.0], [1.0, 1.0]), np.array([0, 0]),
                               np.array([0.5, 0.5]), np.array([[9.0, 9.0], [7.0, 7.0]]),
                               _diag([2.0, 3.0], [2.0, 3.0]))
    assert beta[0] == pytest.approx(1.0) and mu_c[0] == pytest.approx([3.0, 0.0])
    assert cov_c[0, 0, 0] == pytest.approx(4.0) and cov_c[0, 1, 1] == pytest.approx(1.0)
    assert beta[1] == 0.5 and mu_c[1] == pytest.approx([7.0, 7.0]) and cov_c[1, 0, 0] == 3.0
    a, kl = e_step(mu, _diag([1.0, 1.0], [1.0, 1.0]), mu_c, cov_c)
    assert a.shape == (2,) and kl.shape == (2,)


def test_agglomerative_matches_straightforward_reference():
    rng = np.random.default_rng(3)
    for trial in range(20):
        n = int(rng.integers(2, 25))
        k = int(rng.integers(1, n + 1))
        mu = np.round(rng.normal(0, 10, (n, 2)), 1)
        mu[rng.integers(0, n)] = mu[0]  # some identical centres
        alpha = rng.uniform(0.1, 1, n)
        alpha /= alpha.sum()
        cov = _diag(rng.uniform(1, 9, n), rng.uniform(1, 9, n))
        ra, rm, rc = _reference_agglomerative(alpha, mu, cov, k)
        ba, bm, bc = agglomerative_init(alpha, mu, cov, k)
        assert ba == pytest.approx(ra), trial
        assert bm == pytest.approx(rm), trial
        assert bc == pytest.approx(rc), trial


def test_agglomerative_zero_distance_pair_is_never_merged_directly():
    # QUIRK: A and B share a centre (distance 0 -> inf); A-C and B-C are both 3, and the first in
    # row-major order, (A, C), is merged: result [B, A+C] (survivors first, then merged slots).
    mu = np.array([[0.0, 0.0], [0.0, 0.0], [3.0, 0.0]])
    alpha = np.array([0.5, 0.25, 0.25])
    beta, m, _ = agglomerative_init(alpha, mu, _diag([1.0] * 3, [1.0] * 3), 2)
    assert beta == pytest.approx([0.25, 0.75])
    assert m[0] == pytest.approx([0.0, 0.0])
    assert m[1] == pytest.approx([1.0, 0.0])  # (0.5 * 0 + 0.25 * 3) / 0.75


def test_agglomerative_identical_centres_only_no_nan():
    # The original merged with an empty slot here (NaN means); now the two are merged.
    mu = np.array([[5.0, 5.0], [5.0, 5.0]])
    beta, m, c = agglomerative_init(np.array([0.5, 0.5]), mu, _diag([4.0, 4.0], [1.0, 1.0]), 1)
    assert beta == pytest.approx([1.0]) and m[0] == pytest.approx([5.0, 5.0])
    assert np.isfinite(c).all()


def test_batch_equals_single_groups():
    rng = np.random.default_rng(7)
    groups, ks, alphas, mus, covs = [], [], [], [], []
    for g in range(12):
        n = int(rng.integers(2, 30 if g else 60))
        alpha = rng.uniform(0.1, 1, n)
        alphas.append(alpha / alpha.sum())
        mus.append(rng.normal(0, 20, (n, 2)))
        covs.append(_diag(rng.uniform(4, 30, n), rng.uniform(4, 30, n)))
        groups.append(np.full(n, g))
        ks.append(int(rng.integers(1, n)))
    _b, m, c, cg, status, _ = collapse_batch(np.concatenate(alphas), np.concatenate(mus),
                                            np.concatenate(covs), np.concatenate(groups), ks)
    ab, am, _ac, ag = agglomerative_init_batch(np.concatenate(alphas), np.concatenate(mus),
                                              np.concatenate(covs), np.concatenate(groups), ks)
    for g in range(12):
        single = collapse(alphas[g], mus[g], covs[g], ks[g])
        assert status[g] == single.status
        assert m[cg == g] == pytest.approx(single.mu)
        assert c[cg == g] == pytest.approx(single.cov)
        sa, sm, _ = agglomerative_init(alphas[g], mus[g], covs[g], ks[g])
        assert am[ag == g] == pytest.approx(sm) and ab[ag == g] == pytest.approx(sa)


def test_b14_em_budget_exhaustion_returns_agglomerative_parameters(caplog):
    # The original's "EM Timeout - using fallback" returned the partially updated EM parameters;
    # now the message and the returned (agglomerative) parameters agree. Budget: n*k = 4*2 = 8 KL
    # evaluations per E-step; the first iteration needs 2 E-steps (16) -> 10 is exhausted at once.
    mu = np.array([[0.0, 0.0], [2.0, 0.0], [10.0, 0.0], [13.0, 0.0]])
    alpha = np.array([0.1, 0.2, 0.3, 0.4])
    cov = _diag([1.0] * 4, [1.0] * 4)
    with caplog.at_level(logging.WARNING, logger=mog.__name__):
        res = collapse(alpha, mu, cov, 2, budget=CollapseBudget(em_work=10))
    assert res.status == "em_budget"
    assert res.message == mog.MSG_EM_BUDGET and mog.MSG_EM_BUDGET in caplog.text
    assert "using fallback" in res.message
    _ia, im, ic = agglomerative_init(alpha, mu, cov, 2)
    assert res.mu == pytest.approx(im) and res.cov == pytest.approx(ic)


def test_b13_zero_init_budget_is_deterministic_fallback(caplog):
    mu = np.array([[0.0, 0.0], [1.0, 0.0], [5.0, 0.0]])
    with caplog.at_level(logging.WARNING, logger=mog.__name__):
        res = collapse(np.full(3, 1 / 3), mu, _diag([1.0] * 3, [1.0] * 3), 1,
                       budget=CollapseBudget(init_work=0))
    assert res.status == "init_budget" and res.mu is None and res.beta is None
    assert mog.MSG_INIT_BUDGET in caplog.text
    # (n - k) * (2n - k)^2 = 2 * 5^2 = 50 work units for n = 3, k = 1.
    assert init_cost(3, 1) == 50.0
    assert collapse(np.full(3, 1 / 3), mu, _diag([1.0] * 3, [1.0] * 3), 1,
                    budget=CollapseBudget(init_work=50)).status == "converged"


def test_not_converged_with_zero_iterations_returns_init(caplog):
    mu = np.array([[0.0, 0.0], [2.0, 0.0], [10.0, 0.0]])
    alpha = np.full(3, 1 / 3)
    cov = _diag([1.0] * 3, [1.0] * 3)
    with caplog.at_level(logging.WARNING, logger=mog.__name__):
        res = collapse(alpha, mu, cov, 2, max_iter=0)
    assert res.status == "not_converged" and mog.MSG_NOT_CONVERGED in caplog.text
    assert res.mu == pytest.approx(agglomerative_init(alpha, mu, cov, 2)[1])


def _random_groups(rng, n_groups, max_n, integer_centres=False):
    """Members of n_groups random groups (some with identical centres): alpha, mu, cov, group, k."""
    alphas, mus, covs, groups, ks = [], [], [], [], []
    for g in range(n_groups):
        n = int(rng.integers(2, max_n))
        alpha = rng.uniform(0.1, 1, n)
        alphas.append(alpha / alpha.sum())
        if integer_centres:
            mu = rng.integers(0, 12, (n, 2)).astype(float)
        else:
            mu = rng.normal(0, 15, (n, 2))
        mu[rng.integers(0, n)] = mu[0]
        mus.append(mu)
        covs.append(_diag(rng.uniform(1, 20, n), rng.uniform(1, 20, n)))
        groups.append(np.full(n, g))
        ks.append(int(rng.integers(1, n)))
    return (np.concatenate(alphas), np.concatenate(mus), np.concatenate(covs),
            np.concatenate(groups), np.array(ks))


needs_numba = pytest.mark.skipif(not mog._HAVE_NUMBA, reason="numba not installed")
BACKENDS = [pytest.param(False, id="numpy"), pytest.param(True, id="numba", marks=needs_numba)]


@pytest.mark.parametrize("use_numba", BACKENDS)
@pytest.mark.parametrize("tail", [0, 3, 10**9])
@pytest.mark.parametrize("integer_centres", [False, True])
def test_agglomerative_batch_is_bitwise_the_reference_on_every_path(tail, integer_centres,
                                                                      use_numba, monkeypatch):
    # The lockstep rounds (tail 0), the default mix, and the plain-float continuation alone
    # (tail 10**9) do the reference's operations in the reference's order: equal bit for bit,
    # including the tie-breaks of integer centres (many equal distances) and identical centres.
    # The numba kernel (tail irrelevant there) too.
    monkeypatch.setattr(mog, "_SCALAR_TAIL_GROUPS", tail)
    rng = np.random.default_rng(11 + integer_centres)
    alpha, mu, cov, group, ks = _random_groups(rng, 14, 45, integer_centres)
    ba, bm, bc, bg = agglomerative_init_batch(alpha, mu, cov, group, ks, use_numba=use_numba)
    for g in range(len(ks)):
        sel = group == g
        ra, rm, rc = _reference_agglomerative(alpha[sel], mu[sel], cov[sel], ks[g])
        np.testing.assert_array_equal(ba[bg == g], ra)
        np.testing.assert_array_equal(bm[bg == g], rm)
        np.testing.assert_array_equal(bc[bg == g], rc)


def _reference_collapse(alpha, mu, cov, k, max_iter):
    """Plain per-group hard EM (the original's loop) on top of the reference init."""
    beta, mc, cc = _reference_agglomerative(alpha, mu, cov, k)
    init = (mc.copy(), cc.copy())
    d, delta, it = np.inf, np.inf, 0
    assign = None
    while delta > 1e-10 and it < max_iter:
        it += 1
        if assign is None:
            assign, _ = e_step(mu, cov, mc, cc)
        beta, mc, cc = m_step(alpha, mu, cov, assign, beta, mc, cc)
        assign, mk = e_step(mu, cov, mc, cc)
        prev, d = d, float(np.dot(alpha, mk))
        delta = prev - d
        if delta < 0:
            return "not_monotonic", it, init
    if delta > 1e-10:
        return "not_converged", it, init
    return "converged", it, (mc, cc)


@pytest.mark.parametrize("use_numba", BACKENDS)
@pytest.mark.parametrize("max_iter", [1, 2, 20])
def test_collapse_batch_matches_plain_em_loop(max_iter, use_numba):
    # collapse_batch skips the arithmetic of groups whose assignment stopped changing (their next
    # iteration is a fixed point); statuses, iteration counts and parameters must still be those
    # of the plain loop, including groups cut off by max_iter.
    rng = np.random.default_rng(21)
    alpha, mu, cov, group, ks = _random_groups(rng, 16, 30)
    _b, m, c, cg, status, iters = collapse_batch(alpha, mu, cov, group, ks, max_iter=max_iter,
                                                 use_numba=use_numba)
    for g in range(len(ks)):
        sel = group == g
        st, it, (rm, rc) = _reference_collapse(alpha[sel], mu[sel], cov[sel], ks[g], max_iter)
        assert (status[g], int(iters[g])) == (st, it), g
        assert m[cg == g] == pytest.approx(rm) and c[cg == g] == pytest.approx(rc)


# --- numba kernel == NumPy path, bit for bit ------------------------------------------------------


def _hard_case(rng, case):
    """One batch of groups of a given difficulty: alpha, mu, cov, group, k."""
    if case == "integer_ties":  # many equal distances: the first-in-row-major tie-break decides
        return _random_groups(rng, 20, 40, integer_centres=True)
    if case == "identical":  # every centre equal in some groups: only the fallback pair merges
        alpha, mu, cov, group, ks = _random_groups(rng, 8, 25, integer_centres=True)
        for g in (0, 3, 5):
            mu[group == g] = mu[group == g][0]
        return alpha, mu, cov, group, ks
    if case == "zero_weights":  # alpha = 0 members: 0 / 0 -> NaN means, NaN distances
        alpha, mu, cov, group, ks = _random_groups(rng, 12, 30, integer_centres=True)
        alpha[rng.random(alpha.size) < 0.4] = 0.0
        alpha[group == 2] = 0.0  # a whole group of zero weights
        return alpha, mu, cov, group, ks
    if case == "nan_centres":  # NaN input means (not produced by the merger): NaN semantics
        alpha, mu, cov, group, ks = _random_groups(rng, 10, 25)
        mu[rng.integers(0, alpha.size, 4), rng.integers(0, 2, 4)] = np.nan
        return alpha, mu, cov, group, ks
    if case == "large":  # a few big groups next to tiny ones (k = 1 and k = n - 1 included)
        alpha, mu, cov, group, ks = _random_groups(rng, 6, 120)
        ks[0], ks[1] = 1, np.bincount(group)[1] - 1
        return alpha, mu, cov, group, ks
    return _random_groups(rng, 15, 35)


CASES = ["random", "integer_ties", "identical", "zero_weights", "nan_centres", "large"]


@needs_numba
@pytest.mark.parametrize("case", CASES)
def test_numba_agglomerative_is_bitwise_the_numpy_path(case):
    rng = np.random.default_rng(CASES.index(case))
    for _ in range(6):
        args = _hard_case(rng, case)
        with np.errstate(invalid="ignore", divide="ignore"):
            want = agglomerative_init_batch(*args, use_numba=False)
        got = agglomerative_init_batch(*args, use_numba=True)
        for w, g_ in zip(want, got):
            assert w.dtype == g_.dtype and w.shape == g_.shape
            np.testing.assert_array_equal(g_, w)  # NaN == NaN here (zero-weight merges)
        if case in ("zero_weights", "nan_centres"):
            assert np.isnan(want[1]).any()  # the NaN paths were exercised


@needs_numba
def test_numba_collapse_batch_is_bitwise_the_numpy_path_with_budgets_and_max_iter():
    rng = np.random.default_rng(5)
    for max_iter in range(1, 21):
        alpha, mu, cov, group, ks = _hard_case(rng, ["random", "integer_ties", "identical"][
            max_iter % 3])
        n_g = np.bincount(group)
        # Small budgets: some groups above the init budget, the EM budget running out midway.
        budget = CollapseBudget(init_work=float(np.median(mog.init_costs(n_g, ks))),
                                em_work=float(rng.choice([1e8, 40.0 * n_g.max()])))
        want = collapse_batch(alpha, mu, cov, group, ks, max_iter, budget=budget,
                              use_numba=False)
        got = collapse_batch(alpha, mu, cov, group, ks, max_iter, budget=budget, use_numba=True)
        for w, g_ in zip(want[:4], got[:4]):
            np.testing.assert_array_equal(g_, w)
        assert got[4] == want[4] and (got[5] == want[5]).all()
        assert "init_budget" in want[4]


def test_backend_selection_is_explicit(monkeypatch):
    calls = []
    monkeypatch.setattr(mog, "_agglomerative_numba", lambda *a: calls.append(a) or
                        mog._agglomerative_core(*a))
    alpha, mu, cov, group, ks = _random_groups(np.random.default_rng(1), 3, 10)
    monkeypatch.setattr(mog, "USE_NUMBA", False)
    agglomerative_init_batch(alpha, mu, cov, group, ks)
    assert not calls  # the switch off: NumPy path
    if mog._HAVE_NUMBA:
        monkeypatch.setattr(mog, "USE_NUMBA", True)
        agglomerative_init_batch(alpha, mu, cov, group, ks)
        assert len(calls) == 1  # the switch on: numba path
        agglomerative_init_batch(alpha, mu, cov, group, ks, use_numba=False)
        assert len(calls) == 1  # the argument overrides the switch
    monkeypatch.setattr(mog, "_HAVE_NUMBA", False)
    monkeypatch.setattr(mog, "USE_NUMBA", True)
    agglomerative_init_batch(alpha, mu, cov, group, ks)  # no numba: NumPy whatever the switch
    assert len(calls) == (1 if calls else 0)
    with pytest.raises(RuntimeError, match="numba is not installed"):
        agglomerative_init_batch(alpha, mu, cov, group, ks, use_numba=True)
    assert mog.warm_up() >= 0.0  # a no-op without numba


@needs_numba
def test_numba_kernel_in_threads_gives_the_same_results():
    # predict merges in a thread while TensorFlow runs: concurrent calls must not interfere.
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(9)
    cases = [_random_groups(rng, 10, 30) for _ in range(8)]
    want = [agglomerative_init_batch(*c, use_numba=False) for c in cases]
    with ThreadPoolExecutor(4) as ex:
        got = list(ex.map(lambda c: agglomerative_init_batch(*c, use_numba=True), cases * 3))
    for i, g_ in enumerate(got):
        for a, b in zip(g_, want[i % len(cases)]):
            np.testing.assert_array_equal(a, b)
