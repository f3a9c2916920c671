"""Tests of postprocess/mog.py: the mixture-of-Gaussians collapse of the EM-Merger.

The production code is checked against the slow references of tests/postprocess/_reference.py,
bit for bit where it promises that.
"""

import logging

import numpy as np
import pytest

from object_detector_retinanet.keras_retinanet.postprocess import mog
from object_detector_retinanet.keras_retinanet.postprocess.mog import (
    CollapseBudget,
    Mixture,
    agglomerative_init,
    agglomerative_init_batch,
    collapse,
    collapse_batch,
    e_step,
    gaussian_kl,
    init_cost,
    m_step,
)
from tests.postprocess._reference import (
    lockstep_agglomerative,
    reference_agglomerative,
    reference_collapse,
)


def _diag(vx, vy):
    c = np.zeros((len(vx), 2, 2))
    c[:, 0, 0], c[:, 1, 1] = vx, vy
    return c


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
    res = collapse(
        alpha, mu, _diag([1.0] * 4, [1.0] * 4), 2, CollapseBudget(max_iter=20, epsilon=1e-10)
    )
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
    members = Mixture.of(alpha, mu, _diag([1.0, 1.0], [1.0, 1.0]))
    components = Mixture.of(
        np.array([0.5, 0.5]), np.array([[9.0, 9.0], [7.0, 7.0]]), _diag([2.0, 3.0], [2.0, 3.0])
    )
    beta, mu_c, cov_c, _ = m_step(members, np.array([0, 0]), components)
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
        ra, rm, rc = reference_agglomerative(alpha, mu, cov, k)
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


def test_batch_equals_single_regions():
    rng = np.random.default_rng(7)
    regions, ks, alphas, mus, covs = [], [], [], [], []
    for g in range(12):
        n = int(rng.integers(2, 30 if g else 60))
        alpha = rng.uniform(0.1, 1, n)
        alphas.append(alpha / alpha.sum())
        mus.append(rng.normal(0, 20, (n, 2)))
        covs.append(_diag(rng.uniform(4, 30, n), rng.uniform(4, 30, n)))
        regions.append(np.full(n, g))
        ks.append(int(rng.integers(1, n)))
    members = Mixture(
        np.concatenate(alphas), np.concatenate(mus), np.concatenate(covs), np.concatenate(regions)
    )
    _b, m, c, cg, status, _ = collapse_batch(members, ks)
    ab, am, _ac, ag = agglomerative_init_batch(members, ks)
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
        res = collapse(
            np.full(3, 1 / 3),
            mu,
            _diag([1.0] * 3, [1.0] * 3),
            1,
            budget=CollapseBudget(init_work=0),
        )
    assert res.status == "init_budget" and res.mu is None and res.beta is None
    assert mog.MSG_INIT_BUDGET in caplog.text
    # (n - k) * (2n - k)^2 = 2 * 5^2 = 50 work units for n = 3, k = 1.
    assert init_cost(3, 1) == 50.0
    assert (
        collapse(
            np.full(3, 1 / 3),
            mu,
            _diag([1.0] * 3, [1.0] * 3),
            1,
            budget=CollapseBudget(init_work=50),
        ).status
        == "converged"
    )


def test_not_converged_with_zero_iterations_returns_init(caplog):
    mu = np.array([[0.0, 0.0], [2.0, 0.0], [10.0, 0.0]])
    alpha = np.full(3, 1 / 3)
    cov = _diag([1.0] * 3, [1.0] * 3)
    with caplog.at_level(logging.WARNING, logger=mog.__name__):
        res = collapse(alpha, mu, cov, 2, CollapseBudget(max_iter=0))
    assert res.status == "not_converged" and mog.MSG_NOT_CONVERGED in caplog.text
    assert res.mu == pytest.approx(agglomerative_init(alpha, mu, cov, 2)[1])


def _random_regions(rng, n_regions, max_n, integer_centres=False):
    """Members of n_regions random regions (some identical centres): alpha, mu, cov, region, k."""
    alphas, mus, covs, regions, ks = [], [], [], [], []
    for g in range(n_regions):
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
        regions.append(np.full(n, g))
        ks.append(int(rng.integers(1, n)))
    return (
        np.concatenate(alphas),
        np.concatenate(mus),
        np.concatenate(covs),
        np.concatenate(regions),
        np.array(ks),
    )


@pytest.mark.parametrize("integer_centres", [False, True])
def test_agglomerative_batch_is_bitwise_the_reference(integer_centres):
    # The kernel does the reference's operations in the reference's order: equal bit for bit,
    # including the tie-breaks of integer centres (many equal distances) and identical centres.
    rng = np.random.default_rng(11 + integer_centres)
    alpha, mu, cov, region, ks = _random_regions(rng, 14, 45, integer_centres)
    ba, bm, bc, bg = agglomerative_init_batch(Mixture(alpha, mu, cov, region), ks)
    for g in range(len(ks)):
        sel = region == g
        ra, rm, rc = reference_agglomerative(alpha[sel], mu[sel], cov[sel], ks[g])
        np.testing.assert_array_equal(ba[bg == g], ra)
        np.testing.assert_array_equal(bm[bg == g], rm)
        np.testing.assert_array_equal(bc[bg == g], rc)


@pytest.mark.parametrize("max_iter", [1, 2, 20])
def test_collapse_batch_matches_plain_em_loop(max_iter):
    # collapse_batch skips the arithmetic of regions whose assignment stopped changing (their next
    # iteration is a fixed point); statuses, iteration counts and parameters must still be those
    # of the plain loop, including regions cut off by max_iter.
    rng = np.random.default_rng(21)
    alpha, mu, cov, region, ks = _random_regions(rng, 16, 30)
    members = Mixture(alpha, mu, cov, region)
    _b, m, c, cg, status, iters = collapse_batch(members, ks, CollapseBudget(max_iter=max_iter))
    for g in range(len(ks)):
        sel = region == g
        st, it, (rm, rc) = reference_collapse(alpha[sel], mu[sel], cov[sel], ks[g], max_iter)
        assert (status[g], int(iters[g])) == (st, it), g
        assert m[cg == g] == pytest.approx(rm) and c[cg == g] == pytest.approx(rc)


# --- The kernel equals the former NumPy (lockstep) init bit for bit, NaN cases included ---


def _hard_case(rng, case):
    """One batch of regions of a given difficulty: alpha, mu, cov, region, k."""
    if case == "integer_ties":  # many equal distances: the first-in-row-major tie-break decides
        return _random_regions(rng, 20, 40, integer_centres=True)
    if case == "identical":  # every centre equal in some regions: only the fallback pair merges
        alpha, mu, cov, region, ks = _random_regions(rng, 8, 25, integer_centres=True)
        for g in (0, 3, 5):
            mu[region == g] = mu[region == g][0]
        return alpha, mu, cov, region, ks
    if case == "zero_weights":  # alpha = 0 members: 0 / 0 -> NaN means, NaN distances
        alpha, mu, cov, region, ks = _random_regions(rng, 12, 30, integer_centres=True)
        alpha[rng.random(alpha.size) < 0.4] = 0.0
        alpha[region == 2] = 0.0  # a whole region of zero weights
        return alpha, mu, cov, region, ks
    if case == "nan_centres":  # NaN input means (not produced by the merger): NaN semantics
        alpha, mu, cov, region, ks = _random_regions(rng, 10, 25)
        mu[rng.integers(0, alpha.size, 4), rng.integers(0, 2, 4)] = np.nan
        return alpha, mu, cov, region, ks
    if case == "large":  # a few big regions next to tiny ones (k = 1 and k = n - 1 included)
        alpha, mu, cov, region, ks = _random_regions(rng, 6, 120)
        ks[0], ks[1] = 1, np.bincount(region)[1] - 1
        return alpha, mu, cov, region, ks
    return _random_regions(rng, 15, 35)


CASES = ["random", "integer_ties", "identical", "zero_weights", "nan_centres", "large"]


@pytest.mark.parametrize("case", CASES)
def test_agglomerative_is_bitwise_the_lockstep_reference(case):
    rng = np.random.default_rng(CASES.index(case))
    for _ in range(6):
        *members, ks = _hard_case(rng, case)
        with np.errstate(invalid="ignore", divide="ignore"):
            want = lockstep_agglomerative(Mixture(*members), ks)
        got = agglomerative_init_batch(Mixture(*members), ks)
        for w, g_ in zip(want, got):
            assert w.dtype == g_.dtype and w.shape == g_.shape
            np.testing.assert_array_equal(g_, w)  # NaN == NaN here (zero-weight merges)
        if case in ("zero_weights", "nan_centres"):
            assert np.isnan(want[1]).any()  # the NaN paths were exercised


def test_collapse_batch_is_bitwise_the_same_with_the_reference_init(monkeypatch):
    production = mog.agglomerative_init_batch
    rng = np.random.default_rng(5)
    for max_iter in range(1, 21):
        alpha, mu, cov, region, ks = _hard_case(
            rng, ["random", "integer_ties", "identical"][max_iter % 3]
        )
        n_g = np.bincount(region)
        # Small budgets: some regions above the init budget, the EM budget running out midway.
        budget = CollapseBudget(
            init_work=float(np.median(mog.init_costs(n_g, ks))),
            em_work=float(rng.choice([1e8, 40.0 * n_g.max()])),
            max_iter=max_iter,
        )
        members = Mixture(alpha, mu, cov, region)
        monkeypatch.setattr(mog, "agglomerative_init_batch", lockstep_agglomerative)
        want = collapse_batch(members, ks, budget=budget)
        monkeypatch.setattr(mog, "agglomerative_init_batch", production)
        got = collapse_batch(members, ks, budget=budget)
        for w, g_ in zip(want[:4], got[:4]):
            np.testing.assert_array_equal(g_, w)
        assert got[4] == want[4] and (got[5] == want[5]).all()
        assert "init_budget" in want[4]


def test_warm_up_loads_the_kernel_and_results_equal_the_reference():
    # predict calls warm_up while the model loads, to keep numba's start-up off the first merge.
    assert mog.warm_up() >= 0.0
    *members, ks = _random_regions(np.random.default_rng(1), 3, 10)
    want = lockstep_agglomerative(Mixture(*members), ks)
    got = agglomerative_init_batch(Mixture(*members), ks)
    for w, g_ in zip(want, got):
        np.testing.assert_array_equal(g_, w)


def test_numba_kernel_in_threads_gives_the_same_results():
    # predict merges in a thread while TensorFlow runs: concurrent calls must not interfere.
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(9)
    cases = [_random_regions(rng, 10, 30) for _ in range(8)]
    want = [lockstep_agglomerative(Mixture(*c[:4]), c[4]) for c in cases]
    with ThreadPoolExecutor(4) as ex:
        got = list(ex.map(lambda c: agglomerative_init_batch(Mixture(*c[:4]), c[4]), cases * 3))
    for i, g_ in enumerate(got):
        for a, b in zip(g_, want[i % len(cases)]):
            np.testing.assert_array_equal(a, b)
