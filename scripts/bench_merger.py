"""Benchmark of the EM-Merger (postprocess/) against plain IoU-NMS on simulated detections.

Scenes are photo-sized (3264x2448) packed shelves from ``synthetic.make_layout``; raw detections are
simulated per object (several jittered boxes, boxes straddling two touching neighbours, background
noise) with a soft score (predicted IoU) and a hard score (objectness). Two regimes:

- ``easy``: objectness tracks the IoU with the object (straddlers score low on both heads);
- ``weak``: objectness is only weakly tied to IoU (look-alike neighbours: straddlers get high hard
  scores), while the soft score still tracks IoU.

Reported per method: median ms per image (this process; run under ``taskset -c 0`` for one core),
COCO AP / AP.75 / AR300 (``utils.eval.evaluate_detections``, maxDets 300) and count MAE
(detections with confidence > 0.5 vs objects). Also the scaling of the merger at 500 / 2k / 8k /
20k raw detections and the speed and agreement of a straightforward full-resolution REFERENCE
implementation of the original algorithm (kept here, clearly marked, for the ratio only).

The MoG agglomerative init is a numba kernel; its one-time start-up (``mog.warm_up``) is paid
before the timings and reported.

Usage:
    taskset -c 0 python scripts/bench_merger.py            # full run
    taskset -c 0 python scripts/bench_merger.py --quick    # a fast run
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import sys
import time

import cv2
import numpy as np

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from object_detector_retinanet.keras_retinanet.postprocess import (
    SELECTIONS,
    EmMergerConfig,
    merge_detections,
)
from object_detector_retinanet.keras_retinanet.postprocess.mog import (
    Mixture,
    e_step,
    m_step,
    warm_up,
)
from object_detector_retinanet.keras_retinanet.utils.boxes import (
    compute_overlap,
    non_max_suppression,
)
from object_detector_retinanet.keras_retinanet.utils.synthetic import (
    default_object_sizes,
    make_layout,
)

PHOTO = (2448, 3264)  # (height, width) of a SKU-110K photograph


# ------------------------------------------------------------------------------------------------
# Simulated detector output
# ------------------------------------------------------------------------------------------------


def simulate_detections(rng, gt, shape, regime="easy", dups=8.0, bridge_prob=0.35, noise_frac=0.05):
    """Raw detections (N, 7) [x1, y1, x2, y2, confidence, hard, soft] for GT boxes (M, 4).

    Per object: Poisson(dups) + 1 jittered boxes (centre jitter ~ N(0, 0.08 w), size ~
    lognormal(0, 0.08)); per touching left/right neighbour pair, with bridge_prob, 1-3 boxes
    centred on the shared edge (IoU ~ 1/3 with each); noise_frac * M * dups background boxes.
    Soft score ~ IoU with the best GT + N(0, 0.05); hard score: easy ~ IoU-driven, weak ~ mostly
    objectness (0.6-0.95) for anything overlapping a product. Confidence = 0.5 hard + 0.5 soft;
    rows with hard <= 0.1 are dropped and the rest sorted by confidence (§9).
    """
    h_img, w_img = shape
    gt = np.asarray(gt, dtype=np.float64)
    m = gt.shape[0]
    w = gt[:, 2] - gt[:, 0]
    h = gt[:, 3] - gt[:, 1]
    cx = gt[:, 0] + w / 2
    cy = gt[:, 1] + h / 2
    counts = rng.poisson(dups, m) + 1
    idx = np.repeat(np.arange(m), counts)
    jx = rng.normal(0, 0.08, idx.size) * w[idx]
    jy = rng.normal(0, 0.08, idx.size) * h[idx]
    sw = w[idx] * np.exp(rng.normal(0, 0.08, idx.size))
    sh = h[idx] * np.exp(rng.normal(0, 0.08, idx.size))
    boxes = [
        np.stack(
            [
                cx[idx] + jx - sw / 2,
                cy[idx] + jy - sh / 2,
                cx[idx] + jx + sw / 2,
                cy[idx] + jy + sh / 2,
            ],
            1,
        )
    ]
    # Straddlers: touching neighbours on one shelf (same baseline, x2 == x1 of the next).
    key = {}
    for i in range(m):
        key.setdefault((gt[i, 3], gt[i, 0]), i)
    bridges = []
    for i in range(m):
        j = key.get((gt[i, 3], gt[i, 2]))
        if j is None or rng.random() >= bridge_prob:
            continue
        for _ in range(rng.integers(1, 4)):
            bw = 0.5 * (w[i] + w[j]) * np.exp(rng.normal(0, 0.05))
            bh = 0.5 * (h[i] + h[j]) * np.exp(rng.normal(0, 0.05))
            bx = gt[i, 2] + rng.normal(0, 0.05) * bw
            by = 0.5 * (cy[i] + cy[j]) + rng.normal(0, 0.05) * bh
            bridges.append([bx - bw / 2, by - bh / 2, bx + bw / 2, by + bh / 2])
    if bridges:
        boxes.append(np.asarray(bridges))
    n_noise = int(noise_frac * m * dups)
    if n_noise:
        nw = rng.uniform(0.5, 1.5, n_noise) * np.median(w)
        nh = rng.uniform(0.5, 1.5, n_noise) * np.median(h)
        nx = rng.uniform(0, w_img, n_noise)
        ny = rng.uniform(0, h_img, n_noise)
        boxes.append(np.stack([nx - nw / 2, ny - nh / 2, nx + nw / 2, ny + nh / 2], 1))
    b = np.concatenate(boxes)
    b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0, w_img)
    b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0, h_img)
    b = b[(b[:, 2] - b[:, 0] > 1) & (b[:, 3] - b[:, 1] > 1)]
    iou = compute_overlap(b, gt).max(axis=1) if m else np.zeros(len(b))
    soft = np.clip(iou + rng.normal(0, 0.05, len(b)), 0.01, 0.99)
    if regime == "easy":
        hard = np.clip(0.15 + 0.85 * iou**1.5 + rng.normal(0, 0.05, len(b)), 0.0, 0.99)
    else:
        on_product = iou > 0.2
        hard = np.where(
            on_product, rng.uniform(0.6, 0.95, len(b)) + 0.05 * iou, rng.uniform(0.05, 0.4, len(b))
        )
        hard = np.clip(hard, 0.0, 0.99)
    conf = 0.5 * hard + 0.5 * soft
    det = np.concatenate([b, conf[:, None], hard[:, None], soft[:, None]], axis=1)
    det = det[hard > 0.1]
    return det[np.argsort(-det[:, 4], kind="stable")]


def make_scene(seed, regime="easy", shape=PHOTO, objects_scale=1.0, dups=8.0):
    """(gt (M, 4), detections (N, 7), shape) of one simulated image; objects_scale > 1 tiles a
    larger image with photo-sized products (more objects)."""
    rng = np.random.default_rng(seed)
    lo, hi = default_object_sizes(*PHOTO)
    hh = int(shape[0] * math.sqrt(objects_scale))
    ww = int(shape[1] * math.sqrt(objects_scale))
    gt = make_layout(rng, hh, ww, min_object_size=lo, max_object_size=hi).astype(np.float64)
    return gt, simulate_detections(rng, gt, (hh, ww), regime, dups=dups), (hh, ww)


# ------------------------------------------------------------------------------------------------
# REFERENCE: a straightforward full-resolution implementation of the original algorithm (§10),
# loop by loop, with the same fixes (B9-B15). Used only for the speed ratio and the agreement
# check; slow on purpose (per-box painting of a full-resolution float64 map, O(n^3) init).
# ------------------------------------------------------------------------------------------------


def reference_merge(det, shape):
    """REFERENCE implementation (slow); returns the kept rows of det (sorted by confidence)."""
    from scipy.stats import chi2

    if len(det) == 0:
        return det[:0]
    H, W = shape
    order = np.lexsort((det[:, 5], det[:, 3], det[:, 2], det[:, 1], det[:, 0], -det[:, 4]))
    d = det[order]
    b = np.trunc(d[:, :4]).astype(np.int64)
    conf = d[:, 4]
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    cx, cy = b[:, 0] + w / 2.0, b[:, 1] + h / 2.0
    ws, hs = (w * 0.25).astype(np.int64), (h * 0.25).astype(np.int64)
    sb = np.stack([b[:, 0] + ws, b[:, 1] + hs, b[:, 2] - ws, b[:, 3] - hs], 1)
    sig = np.stack([(sb[:, 2] - sb[:, 0]) / 2.0, (sb[:, 3] - sb[:, 1]) / 2.0], 1)
    heat = np.zeros((H, W), np.float64)
    for i in range(len(d)):
        wp, hp = sb[i, 2] - sb[i, 0], sb[i, 3] - sb[i, 1]
        if wp <= 0 or hp <= 0:
            continue
        x = np.linspace(-wp / 2.0, wp / 2.0, wp) / (np.sqrt(2.0) * (wp / 2.0))
        y = np.linspace(-hp / 2.0, hp / 2.0, hp) / (np.sqrt(2.0) * (hp / 2.0))
        xx, yy = np.meshgrid(x, y)
        k = np.exp(-(xx**2) - yy**2)
        cv2.normalize(k, k, 0, conf[i], cv2.NORM_MINMAX)
        x0, y0 = max(sb[i, 0], 0), max(sb[i, 1], 0)
        x1, y1 = min(sb[i, 2], W), min(sb[i, 3], H)
        if x1 > x0 and y1 > y0:  # B15: clip and crop
            heat[y0:y1, x0:x1] += k[y0 - sb[i, 1] : y1 - sb[i, 1], x0 - sb[i, 0] : x1 - sb[i, 0]]
    cv2.normalize(heat, heat, 0, 255, cv2.NORM_MINMAX)
    hm = cv2.convertScaleAbs(heat)
    _, hm = cv2.threshold(hm, 4, 255, cv2.THRESH_TOZERO)
    contours = cv2.findContours(hm.copy(), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[-2]
    chi = math.sqrt(chi2.ppf(0.5, 2))
    cands = []
    for c in contours:
        rx, ry, rw, rh = cv2.boundingRect(c)
        area = cv2.contourArea(c)
        mem = np.flatnonzero((rx <= cx) & (cx <= rx + rw) & (ry <= cy) & (cy <= ry + rh))
        n = mem.size
        if not (n > 0 and rw > 3 and rh > 3):
            continue
        med = np.median((w[mem] * 0.5) * (h[mem] * 0.5))
        k = max(1, int(min(np.round(area / med), 100) if med > 0 else 0))
        mu = np.stack([cx[mem] - rx, cy[mem] - ry], 1)
        cov = np.zeros((n, 2, 2))
        cov[:, 0, 0], cov[:, 1, 1] = sig[mem, 0] ** 2, sig[mem, 1] ** 2
        if n > k:
            alpha = conf[mem] / conf[mem].sum()
            beta, mc, cc = _reference_agglomerative(alpha, mu, cov, k)
            init = (mc.copy(), cc.copy())
            dv, delta, it = np.inf, np.inf, 0
            while delta > 1e-10 and it < 20:
                it += 1
                a, _ = e_step(mu, cov, mc, cc)
                beta, mc, cc, _ = m_step(Mixture.of(alpha, mu, cov), a, Mixture.of(beta, mc, cc))
                _, mk = e_step(mu, cov, mc, cc)
                prev, dv = dv, float(np.dot(alpha, mk))
                delta = prev - dv
                if delta < 0:
                    break
            if delta < 0 or delta > 1e-10:
                mc, cc = init
        else:
            mc, cc = mu, cov
        mr = np.round(mc).astype(np.int64)
        kk = len(mr)
        removed = set()
        if kk > 1:
            sub = hm[ry : ry + rh, rx : rx + rw]
            cnts = []
            for j in range(kk):
                _, ev, evec = cv2.eigen(cc[j])
                ang = math.degrees(math.atan2(evec[0, 1], evec[0, 0])) % 360
                poly = cv2.ellipse2Poly(
                    (int(mr[j, 0]), int(mr[j, 1])),
                    (
                        round(chi * math.sqrt(max(ev[0, 0], 0))),
                        round(chi * math.sqrt(max(ev[1, 0], 0))),
                    ),
                    round(ang),
                    0,
                    360,
                    15,
                )  # B12: +angle
                mask = cv2.fillPoly(np.zeros_like(sub), [poly], 1)
                f = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[-2]
                cnts.append(f[0] if f else poly.reshape(-1, 1, 2))
            sc = np.zeros((kk, kk))
            for i in range(kk):
                for j in range(i + 1, kk):
                    pa = -cv2.pointPolygonTest(cnts[i], (float(mr[j, 0]), float(mr[j, 1])), True)
                    pb = -cv2.pointPolygonTest(cnts[j], (float(mr[i, 0]), float(mr[i, 1])), True)
                    dist = float(np.hypot(*(mr[i] - mr[j])))
                    sc[i, j] = -np.inf if (pa <= 0 or pb <= 0) else pa + pb - dist
            ii, jj = np.unravel_index(np.argsort(sc, axis=None, kind="stable"), sc.shape)
            for i, j in zip(ii, jj):
                if sc[i, j] >= 0:
                    break
                if i in removed or j in removed:
                    continue
                vi = sub[min(max(mr[i, 1], 0), rh - 1), min(max(mr[i, 0], 0), rw - 1)]
                vj = sub[min(max(mr[j, 1], 0), rh - 1), min(max(mr[j, 0], 0), rw - 1)]
                removed.add(j if vj < vi else i)
        for j in range(kk):
            if j in removed:
                continue
            sx, sy = math.sqrt(cc[j, 0, 0]), math.sqrt(cc[j, 1, 1])
            x, y = float(mr[j, 0]), float(mr[j, 1])
            bx = [
                round(max(0, x - 2 * sx)) + rx,
                round(max(0, y - 2 * sy)) + ry,
                round(min(rw, x + 2 * sx)) + rx,
                round(min(rh, y + 2 * sy)) + ry,
            ]
            if bx[2] - bx[0] > 5 and bx[3] - bx[1] > 5:
                cands.append(bx)
    taken = np.zeros(len(d), bool)
    chosen = []
    for bx in cands:
        got = np.flatnonzero((bx[0] <= cx) & (cx <= bx[2]) & (bx[1] <= cy) & (cy <= bx[3]) & ~taken)
        taken[got] = True
        if got.size:
            s = 0.5 * conf[got] + 0.5 * d[got, 5]
            chosen.append(got[int(np.argmax(s))])
    chosen = np.asarray(chosen, dtype=np.int64)
    if chosen.size == 0:
        return d[:0]
    keep = non_max_suppression(b[chosen].astype(float), conf[chosen], 0.3, overlap="iomin")
    return d[chosen[keep]]


def _reference_agglomerative(alpha, mu, cov, k):
    """REFERENCE: the original's O(n^3) full-matrix argmin agglomerative init."""
    n = len(alpha)
    if n <= k:
        return alpha, mu, cov
    S = 2 * n - k
    a = np.r_[alpha, np.zeros(n - k)]
    m = np.vstack([mu, np.full((n - k, 2), np.inf)])
    c = np.concatenate([cov, np.zeros((n - k, 2, 2))])
    with np.errstate(invalid="ignore"):
        dm = np.sqrt(((m[:, None] - m[None]) ** 2).sum(2))
    dm = np.nan_to_num(np.triu(dm))
    dm[dm == 0] = np.inf
    dead = []
    for slot in range(n, S):
        i, j = np.unravel_index(np.argmin(dm), dm.shape)
        ai, aj = a[i], a[j]
        a[slot] = ai + aj
        m[slot] = (ai * m[i] + aj * m[j]) / a[slot]
        dd = m[i] - m[j]
        c[slot] = (ai * c[i] + aj * c[j] + ai * aj / a[slot] * np.outer(dd, dd)) / a[slot]
        dm[:, i] = dm[:, j] = dm[i, :] = dm[j, :] = np.inf
        m[i] = m[j] = np.inf
        dead += [i, j]
        with np.errstate(invalid="ignore"):
            col = np.sqrt(((m - m[slot]) ** 2).sum(1))
        col[~np.isfinite(col) | (col == 0)] = np.inf
        dm[:slot, slot] = col[:slot]
    keep = np.ones(S, bool)
    keep[dead] = False
    return a[keep], m[keep], c[keep]


# ------------------------------------------------------------------------------------------------
# Bench
# ------------------------------------------------------------------------------------------------


def _nms(det):
    keep = non_max_suppression(det[:, :4], det[:, 4], 0.5, overlap="iou")
    return det[keep]


def _time(fn, reps):
    ts = []
    out = None
    for _ in range(reps):
        t = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts)) * 1e3, out


def _metrics(gts, outs):
    from object_detector_retinanet.keras_retinanet.utils.eval import evaluate_detections

    g = {f"img{i}": gt for i, gt in enumerate(gts)}
    dd = {f"img{i}": o[:, :5] for i, o in enumerate(outs)}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools is chatty
        return evaluate_detections(g, dd, count_threshold=0.5, max_dets=300)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer images, no 20k scaling point")
    p.add_argument("--images", type=int, default=None, help="images per regime (default 8/3)")
    p.add_argument("--reps", type=int, default=None, help="timing repetitions (default 5/3)")
    p.add_argument(
        "--reference",
        type=int,
        default=None,
        help="images per regime also run through the slow REFERENCE (default 2/1)",
    )
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    import numba

    wu = warm_up()  # numba start-up + kernel cache load (or compile), not timed below
    print(
        f"MoG agglomerative init: numba {numba.__version__} kernel (its first call in this "
        f"process took {1e3 * wu:.0f} ms: numba start-up + kernel cache load or compile; not "
        f"in the timings)"
    )
    main_col = "ms/img"
    n_img = args.images or (3 if args.quick else 8)
    reps = args.reps or (3 if args.quick else 5)
    n_ref = args.reference if args.reference is not None else (1 if args.quick else 2)

    print(f"CPU affinity: {sorted(os.sched_getaffinity(0))}  images/regime: {n_img}  reps: {reps}")
    for regime in ("easy", "weak"):
        scenes = [make_scene(args.seed * 1000 + i, regime) for i in range(n_img)]
        gts = [s[0] for s in scenes]
        ndet = np.median([len(s[1]) for s in scenes])
        nobj = np.median([len(s[0]) for s in scenes])
        print(
            f"\n== regime {regime}: {n_img} images {PHOTO[1]}x{PHOTO[0]}, median {ndet:.0f} raw "
            f"detections, {nobj:.0f} objects =="
        )
        print(f"{'method':<26}{main_col:>16}{'AP':>8}{'AP.75':>8}{'AR300':>8}{'MAE':>8}")
        rows = []
        t_nms = [_time(lambda s=s: _nms(s[1]), reps) for s in scenes]
        rows.append(("IoU-NMS 0.5", [np.median([t for t, _ in t_nms])], [o for _, o in t_nms]))
        for sel in SELECTIONS:
            cfg = EmMergerConfig(selection=sel, soft_column=6)
            res = [_time(lambda s=s, c=cfg: merge_detections(s[1], s[2], c), reps) for s in scenes]
            rows.append((f"EM-Merger {sel}", [np.median([r[0] for r in res])], [r[1] for r in res]))
        for name, ms, outs in rows:
            m = _metrics(gts, outs)
            print(
                f"{name:<26}{ms[0]:16.1f}{m['AP']:8.3f}{m['AP75']:8.3f}{m['AR300']:8.3f}"
                f"{m['MAE']:8.2f}"
            )
        if n_ref:
            ref = [_time(lambda s=s: reference_merge(s[1], s[2]), 1) for s in scenes[:n_ref]]
            fast = [_time(lambda s=s: merge_detections(s[1], s[2]), reps) for s in scenes[:n_ref]]
            same = [
                len({tuple(r) for r in a[1][:, :4]} & {tuple(r) for r in b[1][:, :4]})
                / max(len(a[1]), len(b[1]), 1)
                for a, b in zip(ref, fast)
            ]
            mr = _metrics(gts[:n_ref], [r[1] for r in ref])
            mf = _metrics(gts[:n_ref], [f[1] for f in fast])
            tr, tf = np.median([r[0] for r in ref]), np.median([f[0] for f in fast])
            print(
                f"REFERENCE (full-res, straightforward) on {n_ref} image(s): {tr:.0f} ms/img vs "
                f"fast {tf:.1f} ms/img -> {tr / tf:.0f}x; identical output rows "
                f"{100 * np.mean(same):.1f}%; AP ref {mr['AP']:.3f} / fast {mf['AP']:.3f}, "
                f"AP.75 ref {mr['AP75']:.3f} / fast {mf['AP75']:.3f}, MAE ref {mr['MAE']:.2f} "
                f"/ fast {mf['MAE']:.2f}"
            )

    print("\n== scaling (easy regime, photo-sized products, more objects per image) ==")
    print(f"{'raw dets':>9}{'objects':>9}{'image':>13}{main_col:>16}{'us/det':>8}")
    targets = (500, 2000, 8000) if args.quick else (500, 2000, 8000, 20000)
    base_n = np.median([len(make_scene(args.seed * 1000 + i, "easy")[1]) for i in range(2)])
    for target in targets:
        sc = make_scene(args.seed + 77, "easy", objects_scale=target / base_n)
        ms, _ = _time(lambda sc=sc: merge_detections(sc[1], sc[2]), reps)
        print(
            f"{len(sc[1]):9d}{len(sc[0]):9d}{sc[2][1]:>7}x{sc[2][0]:<5}{ms:16.1f}"
            f"{1e3 * ms / len(sc[1]):8.2f}"
        )


if __name__ == "__main__":
    main()
