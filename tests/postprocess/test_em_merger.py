"""Tests of postprocess/em_merger.py and its steps (heat_map.py, redundancy.py): the EM-Merger.

The tests named ``test_bN_*`` check the original's bugs that the port fixes; docs/em-merger.md
tells each story.
"""

import logging

import cv2
import numpy as np
import pytest

from object_detector_retinanet.keras_retinanet.postprocess import em_merger as em
from object_detector_retinanet.keras_retinanet.postprocess import heat_map, mog
from object_detector_retinanet.keras_retinanet.postprocess.em_merger import (
    EmMergerConfig,
    candidate_boxes,
    final_suppression,
    find_regions,
    merge_detections,
    merge_many,
)
from object_detector_retinanet.keras_retinanet.postprocess.heat_map import (
    build_heat_map,
    full_resolution_area,
    quantise_heat,
    render_heat_map,
    shrink_boxes,
)
from object_detector_retinanet.keras_retinanet.postprocess.redundancy import (
    ellipse_contour,
    ellipse_params,
)
from tests.postprocess._reference import (
    lockstep_agglomerative,
    reference_heat_map,
    reference_regions,
)


def _cluster(rng, box, n, jitter=2.0, conf=(0.5, 0.9)):
    """n jittered copies of box with random confidence / hard scores: (n, 6)."""
    b = np.asarray(box, float)[None] + rng.normal(0, jitter, (n, 4))
    c = rng.uniform(*conf, n)
    hard = rng.uniform(0.3, 0.9, n)
    return np.concatenate([b, c[:, None], hard[:, None]], axis=1)


def _best(rows):
    """The original's pick: max 0.5 * confidence + 0.5 * hard (confidence order for ties)."""
    return rows[np.argmax(0.5 * rows[:, 4] + 0.5 * rows[:, 5])]


def _rowset(a):
    return {tuple(np.round(r, 9)) for r in np.asarray(a)}


def _scene(seed, height=240, width=320, objects=6):
    """A small shelf: a row of touching products with jittered duplicates and a straddler."""
    rng = np.random.default_rng(seed)
    rows, gts = [], []
    x = 10.0
    for _ in range(objects):
        w, h = rng.uniform(30, 50), rng.uniform(60, 90)
        gt = [x, 40, x + w, 40 + h]
        gts.append(gt)
        rows.append(_cluster(rng, gt, int(rng.integers(3, 9)), jitter=2.5))
        x += w
    a, b = gts[1], gts[2]
    rows.append(
        np.array([[a[2] - 20, 42, a[2] + 20, 40 + (a[3] - a[1] + b[3] - b[1]) / 2, 0.6, 0.7]])
    )
    det = np.concatenate(rows)
    det[:, [0, 2]] = np.clip(det[:, [0, 2]], 0, width)
    det[:, [1, 3]] = np.clip(det[:, [1, 3]], 0, height)
    return det[np.argsort(-det[:, 4])], (height, width)


def _fast_regions(det, shape, s):
    """(rect, K, members) per valid region of the production merger at sampling step s."""
    d = det[np.lexsort((det[:, 5], det[:, 3], det[:, 2], det[:, 1], det[:, 0], -det[:, 4]))]
    assert (d == det).all()  # the scenes are already in canonical order
    b = np.trunc(d[:, :4]).astype(np.int64)
    config = EmMergerConfig()
    heat, mask = build_heat_map(shrink_boxes(b, d[:, 4]), shape[0], shape[1], config, s)
    regions = find_regions(heat, mask, b, config)
    out = []
    for c in np.flatnonzero(regions.valid):
        mem = regions.member_detection[regions.member_region == c]
        out.append((tuple(regions.rect[c]), int(regions.k[c]), tuple(mem)))
    return out


# --- Bugs ----------------------------------------------------------------------------------------


def test_b9_empty_in_empty_out():
    out = merge_detections(np.zeros((0, 7)), (100, 200))
    assert out.shape == (0, 7)
    assert merge_detections(np.zeros((0, 6)), (100, 200)).shape == (0, 6)


def test_b10_one_detection_is_returned():
    # w = 60, h = 80 -> shrunk 30 x 40; the region's K = round(area ~ 29*39 / (30*40)) = 1 = n.
    # The original did nothing for n == k (no output at all).
    det = np.array([[100.0, 100.0, 160.0, 180.0, 0.9, 0.8]])
    out = merge_detections(det, (300, 300))
    assert out.shape == (1, 6) and (out == det).all()


def test_b10_lone_detection_beside_big_cluster_is_kept():
    rng = np.random.default_rng(1)
    cluster = _cluster(rng, [20, 20, 80, 100], 8)
    lone = np.array([[200.0, 30.0, 250.0, 100.0, 0.55, 0.5]])
    out = merge_detections(np.concatenate([cluster, lone]), (200, 300))
    assert len(out) == 2
    assert _rowset(out) == _rowset([_best(cluster), lone[0]])


def test_two_separated_clusters_give_the_best_member_of_each():
    rng = np.random.default_rng(0)
    a = _cluster(rng, [20, 20, 80, 100], 7)
    b = _cluster(rng, [160, 40, 220, 130], 5)
    out = merge_detections(np.concatenate([a, b]), (200, 300))
    assert len(out) == 2
    assert _rowset(out) == _rowset([_best(a), _best(b)])


def test_b11_final_suppression_compares_last_box():
    # IoMin(A, B) = 64 / min(100, 64) = 1 >= 0.3 -> B suppressed. The original's loop stopped
    # when one box was left after taking the best, so with two candidates both survived.
    rows = np.array([[0, 0, 10, 10, 0.9, 0.9], [1, 1, 9, 9, 0.8, 0.8]], float)
    assert final_suppression(rows).tolist() == [0]
    assert final_suppression(rows[::-1]).tolist() == [1]  # order kept, best wins


def test_b12_tilted_covariance_gives_correctly_oriented_ellipse():
    # cov [[50, 30], [30, 50]]: eigenvalues 80 (along (1, 1)) and 20 (along (1, -1)).
    # Semi-axes sqrt(2 ln 2) * sqrt(80) = 10.53 -> 10 ... round -> 11, and * sqrt(20) = 5.27 -> 5.
    cov = np.array([[[50.0, 30.0], [30.0, 50.0]]])
    chi = np.sqrt(2 * np.log(2))
    angle, ax0, ax1 = ellipse_params(cov, chi)
    assert (angle[0], ax0[0], ax1[0]) == (45, 11, 5)
    cnt = ellipse_contour((20, 20), (11, 5), angle[0], 40, 40)
    along = (20 + 6.0, 20 + 6.0)  # 8.5 px along (1, 1) (y down): inside
    across = (20 + 6.0, 20 - 6.0)  # 8.5 px along (1, -1): outside the 5 px semi-axis
    assert cv2.pointPolygonTest(cnt, along, False) > 0
    assert cv2.pointPolygonTest(cnt, across, False) < 0
    # The original negated the angle, which mirrors the ellipse (kept behind mirror=True).
    m_angle, _, _ = ellipse_params(cov, chi, mirror=True)
    mirrored = ellipse_contour((20, 20), (11, 5), m_angle[0], 40, 40)
    assert cv2.pointPolygonTest(mirrored, along, False) < 0
    assert cv2.pointPolygonTest(mirrored, across, False) > 0


def test_b13_zero_budget_fallback_is_deterministic(caplog):
    rng = np.random.default_rng(2)
    a = _cluster(rng, [20, 20, 80, 100], 7)
    b = _cluster(rng, [160, 40, 220, 130], 6)
    det = np.concatenate([a, b])
    cfg = EmMergerConfig(init_budget=0)
    with caplog.at_level(logging.WARNING, logger=em.__name__):
        out1 = merge_detections(det, (200, 300), cfg)
    assert "falling back to NMS" in caplog.text
    out2 = merge_detections(det, (200, 300), cfg)
    assert (out1 == out2).all() and len(out1) == 2
    # The fallback NMS keeps the highest-confidence member of each tight cluster; that box
    # claims its cluster and the best-scored member is output.
    assert _rowset(out1) == _rowset([_best(a), _best(b)])


def test_b15_tiny_boxes_at_right_and_bottom_edge_do_not_crash():
    # x2 / y2 up to 1 px beyond the image (clipped to the resized input, then divided by the
    # scale); w < 4 -> shift 0, the original's slice was truncated and reshape failed.
    det = np.array(
        [
            [97.0, 50.0, 101.0, 60.0, 0.9, 0.9],
            [98.0, 97.0, 101.0, 101.0, 0.8, 0.8],
            [10.0, 10.0, 40.0, 50.0, 0.7, 0.7],
            [95.0, 95.0, 105.0, 105.0, 0.6, 0.6],
        ]
    )
    out = merge_detections(det, (100, 100))
    assert out.shape[1] == 6
    heat = render_heat_map(shrink_boxes(np.trunc(det[:, :4]).astype(int), det[:, 4]), 100, 100, 1)
    assert heat == pytest.approx(reference_heat_map(det, (100, 100)), abs=1e-12)


# --- Kept behaviour ------------------------------------------------------------------------------


def test_shrink_of_w10_gives_w6_sigma3():
    # w = 10: shift int(10 * 0.5 / 2) = int(2.5) = 2 -> 2..8, w' = 6, sigma = 3;
    # h = 20: shift 5 -> h' = 10, sigma 5; centre (5, 10) from the unshrunk box.
    g = shrink_boxes(np.array([[0, 0, 10, 20]]), np.array([1.0]))
    assert (g.sx1[0], g.sx2[0], g.sy1[0], g.sy2[0]) == (2, 8, 5, 15)
    assert (g.sigma_x[0], g.sigma_y[0]) == (3.0, 5.0)
    assert (g.cx[0], g.cy[0]) == (5.0, 10.0)


def test_quantisation_rounds_half_to_even_then_thresholds_at_4():
    # 4.5 -> 4 (convertScaleAbs rounds half to even) -> <= 4 -> 0; 4.6 -> 5 kept.
    q = quantise_heat(np.array([0.0, 4.5, 4.6, 255.0]), 0.0, 255.0, 4)
    assert q.tolist() == [0.0, 0.0, 5.0, 255.0]


def test_candidate_box_is_2_sigma_clipped_to_the_rectangle():
    # mu (10, 10), sigma (2, 3): [10 - 4, 10 - 6, 10 + 4, 10 + 6] = [6, 4, 14, 16] + offset
    # (100, 200); a second one clipped to the 12 x 30 rectangle: x2 = min(12, 14) = 12.
    mu = np.array([[10, 10], [10, 10]])
    cov = np.array([[[4.0, 0], [0, 9.0]], [[4.0, 0], [0, 9.0]]])
    boxes = candidate_boxes(
        mu, cov, np.array([[100, 200], [0, 0]]), np.array([[50.0, 50.0], [12.0, 30.0]])
    )
    assert boxes.tolist() == [[106, 204, 114, 216], [6, 4, 12, 16]]


def test_full_resolution_area_from_downscaled_contour():
    # A 40 x 24 patch: full-resolution polygon area (40 - 1) * (24 - 1) = 897; from the 4x coarser
    # 10 x 6 patch: 16 * 9 * 5 + 4 * 3 * 26 / 2 + 9 = 720 + 156 + 9 = 885 ... exactly 897?
    full = np.zeros((40, 60), np.uint8)
    full[8:32, 4:44] = 1
    small = full[2::4, 2::4]  # point samples at block centres
    c_full = cv2.findContours(full, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[-2][0]
    c_small = cv2.findContours(small, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[-2][0]
    assert cv2.contourArea(c_full) == 39 * 23
    # small patch: 10 x 6 samples -> area 9 * 5 = 45, perimeter 2 * (9 + 5) = 28:
    # 16 * 45 + 4 * 3 * 28 / 2 + 3 ** 2 = 720 + 168 + 9 = 897.
    est = full_resolution_area(cv2.contourArea(c_small), cv2.arcLength(c_small, True), 4)
    assert est == pytest.approx(897.0)


def test_heat_map_full_resolution_path_equals_reference():
    det, shape = _scene(3)
    g = shrink_boxes(np.trunc(det[:, :4]).astype(int), det[:, 4])
    fast = render_heat_map(g, shape[0], shape[1], 1)
    assert fast == pytest.approx(reference_heat_map(det, shape), abs=1e-9)


def test_downscaled_heat_map_agrees_with_full_resolution_reference():
    # Deviation for speed (heat_map.py, docs/em-merger.md): s = 1 must reproduce the
    # full-resolution original exactly (rectangles, K, members); at the automatic s (2-3 here, ~8
    # samples per shrunk box) two kinds of difference are possible and bounded: regions separated
    # by a gap narrower than s px merge, and K flips where area / median area sits near x.5. Over
    # 12 small shelves, at least 85 % of the original's regions are reproduced exactly and the
    # total K stays within 10 %.
    matched = total = k_ref = k_fast = 0
    for seed in range(12):
        det, shape = _scene(seed)
        ref = reference_regions(det, shape)
        assert _fast_regions(det, shape, 1) == ref, seed
        g = shrink_boxes(np.trunc(det[:, :4]).astype(int), det[:, 4])
        s = heat_map.choose_downscale(g, EmMergerConfig())
        assert s >= 2
        fast = _fast_regions(det, shape, s)
        fast_set = {f[1:] for f in fast}
        matched += sum(r[1:] in fast_set for r in ref)
        total += len(ref)
        k_ref += sum(r[1] for r in ref)
        k_fast += sum(f[1] for f in fast)
        for f in fast:  # rectangles of exactly reproduced regions lie within s px of the original's
            for r in ref:
                if f[1:] == r[1:]:
                    assert np.abs(np.subtract(f[0], r[0])).max() <= s
    assert matched / total >= 0.85, (matched, total)
    assert abs(k_fast - k_ref) <= 0.1 * k_ref


def test_output_independent_of_row_order_and_rows_are_inputs():
    det, shape = _scene(5)
    out = merge_detections(det, shape)
    rng = np.random.default_rng(0)
    for _ in range(3):
        perm = rng.permutation(len(det))
        assert _rowset(merge_detections(det[perm], shape)) == _rowset(out)
    assert _rowset(out) <= _rowset(det)
    assert 5 <= len(out) <= 7  # 6 products (+ possibly the straddler)


def test_extra_columns_carried_through():
    det, shape = _scene(6)
    extra = np.concatenate(
        [det, np.arange(len(det))[:, None] + 1000.0, np.full((len(det), 1), 7.0)], axis=1
    )
    out = merge_detections(extra, shape)
    assert out.shape[1] == 8 and (out[:, 7] == 7.0).all()
    assert (extra[out[:, 6].astype(int) - 1000] == out).all()
    assert _rowset(out[:, :6]) == _rowset(merge_detections(det, shape))


def test_selection_rules():
    # One tight cluster of 3: row 0 wins the original score (0.5 * 0.9 + 0.5 * 0.9 = 0.9),
    # row 2 has the best soft score (column 6).
    det = np.array(
        [
            [50, 50, 110, 130, 0.90, 0.90, 0.10],
            [51, 50, 111, 130, 0.60, 0.50, 0.50],
            [50, 51, 110, 131, 0.55, 0.30, 0.95],
        ],
        float,
    )
    assert (merge_detections(det, (200, 200))[0] == det[0]).all()
    soft = merge_detections(det, (200, 200), EmMergerConfig(selection="soft_iou", soft_column=6))
    assert (soft[0] == det[2]).all()
    # Without a soft column: soft = (confidence - 0.5 * hard) / 0.5 -> rows: 0.9, 0.7, 0.8.
    derived = merge_detections(det[:, :6], (200, 200), EmMergerConfig(selection="soft_iou"))
    assert (derived[0] == det[0, :6]).all()
    with pytest.raises(ValueError, match="selection"):
        EmMergerConfig(selection="median")


def test_bad_input_names_the_row():
    det = np.array([[0, 0, 10, 10, 0.9, 0.9], [20, 0, 10, 10, 0.9, 0.9]], float)
    with pytest.raises(ValueError, match="row 1"):
        merge_detections(det, (50, 50))
    with pytest.raises(ValueError, match=r"\(N, 6\+\)"):
        merge_detections(np.zeros((3, 4)), (50, 50))


def test_merge_many_serial_and_pool_match_single_calls():
    scenes = [_scene(s) for s in (7, 8)]
    single = [merge_detections(d, sh) for d, sh in scenes]
    serial = merge_many([d for d, _ in scenes], [sh for _, sh in scenes])
    pooled = merge_many([d for d, _ in scenes], [sh for _, sh in scenes], processes=2)
    for a, b, c in zip(single, serial, pooled):
        assert (a == b).all() and (a == c).all()


def test_heat_mask_equals_quantised_map_above_zero():
    # Values around the rounding boundaries of the 0..255 scale: 4.5 rounds to 4 (half to even,
    # not kept at threshold 4), 5.5 rounds to 6; thresholds 4 (the default), 5, 0 and -1.
    x = np.array([0.0, 0.4, 0.5, 0.6, 4.4, 4.5, 4.5000001, 5.5, 5.4999999, 6.0, 254.5, 255.0])
    heat, vmin, vmax = x, 0.0, 255.0  # scale 255 / 255 = 1: the scaled values are x exactly
    for t in (4, 5, 0, -1):
        want = (quantise_heat(heat, vmin, vmax, t) > 0).astype(np.uint8)
        np.testing.assert_array_equal(heat_map.heat_mask(heat, vmin, vmax, t), want)
    flat = np.full(5, 2.0)  # constant map: scale 0, nothing above the threshold
    assert not heat_map.heat_mask(flat, 2.0, 2.0, 4).any()


def test_merges_equal_those_with_the_reference_agglomerative_init(monkeypatch):
    # The numba agglomerative kernel does the reference NumPy init's float operations in the same
    # order: the merged output (every column of every row) must be identical, not just close.
    scenes = [_scene(s, objects=10) for s in (3, 4, 5)]
    rng = np.random.default_rng(2)
    crowd = np.concatenate(
        [_cluster(rng, [20 + 35 * i, 30, 55 + 35 * i, 110], 9, jitter=6.0) for i in range(8)]
    )  # touching, heavily jittered: big regions, k > 1
    crowd[:, :4] = np.clip(crowd[:, :4], 0, 320)
    scenes.append((crowd, (160, 330)))
    production = mog.agglomerative_init_batch
    for det, shape in scenes:
        monkeypatch.setattr(mog, "agglomerative_init_batch", lockstep_agglomerative)
        want = merge_detections(det, shape)
        monkeypatch.setattr(mog, "agglomerative_init_batch", production)
        got = merge_detections(det, shape)
        assert got.shape == want.shape and got.shape[0] > 0
        np.testing.assert_array_equal(got, want)
