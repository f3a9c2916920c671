"""The paper's ablation table from saved raw detections: two scores times two post-processors.

Goldman et al. (CVPR 2019), Table 2, separate what the Soft-IoU score and the EM-Merger each add
(§12.3). Each setting here re-merges the rows that ``predict --save-raw DIR`` saved
(:mod:`.utils.raw_detections`), without running the network again:

- **Base & NMS**: confidence = hard score (r = 1), IoU-NMS at 0.5 (:mod:`.postprocess.nms`);
- **Soft-IoU & NMS**: confidence = Soft-IoU score (r = 0), the same NMS;
- **Base & EM-Merger**: r = 1 into the EM-Merger (§10);
- **Soft-IoU & EM-Merger**: the full approach, r = the run's ``hard_score_rate`` (default 0.5)
  with the merger's default selection;
- the full setting with every other ``EmMergerConfig.selection`` (:data:`.config.SELECTIONS`).

confidence = r·hard + (1 − r)·soft (§9.4). Settings that need the Soft-IoU score are skipped, with
a note, when the raw files have none (a stage-1 model); the selections that read it are skipped
at r = 1, as ``predict --selection`` refuses them there.

A row's metrics are ``evaluate.py``'s (:func:`.utils.eval.evaluate_detections`, §12.2) on the
merged rows as the results CSV holds them (boxes truncated to integers, §11.1; score =
confidence), so they equal evaluating the results CSV of ``predict`` with that merger, selection
and r. One caveat: the raw files hold the rows after predict's cap of the most confident
``max_detections`` at *its* r (§9.7); another r ranks the same rows, so an image with more raw
rows than the cap may differ from a fresh predict run at that r.

The report is a JSON-able dict (:func:`ablation_report`); :func:`format_text`,
:func:`format_markdown` and :func:`write_outputs` render it. No Keras or TensorFlow here.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from multiprocessing import get_context

import numpy as np
from tqdm import tqdm

from object_detector_retinanet.keras_retinanet.config import (
    SELECTIONS,
    SOFT_SELECTIONS,
    EmMergerConfig,
    PredictConfig,
)
from object_detector_retinanet.keras_retinanet.errors import InputError
from object_detector_retinanet.keras_retinanet.postprocess.em_merger import merge_detections
from object_detector_retinanet.keras_retinanet.postprocess.nms import nms_merge
from object_detector_retinanet.keras_retinanet.utils.eval import (
    DEFAULT_COUNT_THRESHOLD,
    FULL_APPROACH,
    MAX_DETS,
    PAPER_RESULTS,
    align_detections,
    evaluate_detections,
)
from object_detector_retinanet.keras_retinanet.utils.raw_detections import (
    SUFFIX,
    RawDetections,
    iter_raw,
    merger_rows,
)
from object_detector_retinanet.keras_retinanet.utils.results_csv import image_key, rows_as_read

DEFAULT_SELECTION = EmMergerConfig().selection
OUTPUT_NAMES = ("ablation.csv", "ablation.json", "ablation.md")
NO_SOFT = "skipped: the raw files have no Soft-IoU score (a stage-1 model)"
SOFT_AT_R1 = "skipped: this selection reads the Soft-IoU score, which needs r < 1"


@dataclass(frozen=True)
class Setting:
    """One row of the table: a score mix and a post-processor.

    Attributes:
        name: The row's label.
        merger: ``"nms"`` or ``"em"``.
        hard_score_rate: r of confidence = r·hard + (1 − r)·soft.
        selection: ``EmMergerConfig.selection`` (the EM-Merger only).
        paper: Its row of :data:`.utils.eval.PAPER_RESULTS`, if the paper has one.
    """

    name: str
    merger: str
    hard_score_rate: float
    selection: str = DEFAULT_SELECTION
    paper: str | None = None

    def skip_reason(self, has_soft: bool) -> str | None:
        """Why this setting cannot run on raw files with or without soft scores (None: it can)."""
        if not has_soft and (self.hard_score_rate < 1.0 or self.selection in SOFT_SELECTIONS):
            return NO_SOFT
        if self.merger == "em" and self.selection in SOFT_SELECTIONS and self.hard_score_rate >= 1:
            return SOFT_AT_R1
        return None

    def merge(self, raw: RawDetections) -> np.ndarray:
        """The merged ``(M, 7)`` rows of one image under this setting."""
        rows = merger_rows(raw, self.hard_score_rate)
        if self.merger == "nms":
            return nms_merge(rows, raw.image_shape)
        config = EmMergerConfig(selection=self.selection, hard_score_rate=self.hard_score_rate)
        return merge_detections(rows, raw.image_shape, config)


def settings(hard_score_rate: float = PredictConfig.hard_score_rate) -> list[Setting]:
    """The paper's four rows, then the full setting under every other selection."""
    full = "Soft-IoU & EM-Merger"
    rows = [
        Setting("Base & NMS", "nms", 1.0, paper="Base & NMS"),
        Setting("Soft-IoU & NMS", "nms", 0.0, paper="Soft-IoU & NMS"),
        Setting("Base & EM-Merger", "em", 1.0, paper="Base & EM-Merger"),
        Setting(full, "em", float(hard_score_rate), paper=FULL_APPROACH),
    ]
    rows += [
        Setting(f"{full}, selection {name}", "em", float(hard_score_rate), selection=name)
        for name in SELECTIONS
        if name != DEFAULT_SELECTION
    ]
    return rows


def _ablate_one(job) -> tuple[str, list[np.ndarray]]:
    raw, runnable = job
    return image_key(raw.image_name), [rows_as_read(s.merge(raw)) for s in runnable]


def _merged(jobs: Iterator, processes: int | None) -> Iterator[tuple[str, list[np.ndarray]]]:
    """:func:`_ablate_one` over the jobs, in order; a spawn pool fed in batches if processes > 1."""
    if processes is None or processes <= 1:
        yield from map(_ablate_one, jobs)
        return
    batch_size = 4 * processes  # a few files per worker in memory at a time
    with get_context("spawn").Pool(processes) as pool:
        while batch := [job for _, job in zip(range(batch_size), jobs)]:
            yield from pool.map(_ablate_one, batch)


def _count_files(raw_dir) -> int | None:
    try:
        return sum(name.endswith(SUFFIX) for name in os.listdir(raw_dir))
    except OSError:
        return None


def ablation_report(
    raws: Iterable[RawDetections],
    gt: Mapping[str, np.ndarray],
    hard_score_rate: float = PredictConfig.hard_score_rate,
    count_threshold: float | None = DEFAULT_COUNT_THRESHOLD,
    max_dets: int = MAX_DETS,
    processes: int | None = None,
    total: int | None = None,
    progress: bool = True,
) -> dict:
    """Merge every image under every setting and evaluate each setting against the GT.

    Args:
        raws: The raw detections, one per image (e.g. :func:`.utils.raw_detections.iter_raw`).
            The settings that can run are decided by the first one.
        gt: GT image name → boxes ``(M, 4)``; an image without raw detections counts as an image
            with none (its name is listed in the report), as in ``evaluate``.
        hard_score_rate: r of the full setting.
        count_threshold, max_dets: As :func:`.utils.eval.evaluate_detections`.
        processes: Worker processes for the merging (None/1: in this process).
        total: The number of images, for the progress bar.
        progress: Show a tqdm progress bar (stderr).

    Returns:
        ``{"rows": [...], "settings": {...}, "images_without_raw": [...]}``; a row has ``setting``,
        ``merger``, ``hard_score_rate``, ``selection``, ``paper`` (its row of the paper's table or
        None), ``metrics`` (evaluate's dict; None when skipped), ``skipped`` (why, or None) and
        ``num_detections``.

    Raises:
        InputError: raw detections of an image that is not in the GT (likely the wrong GT file),
            two files of one image, or raw files with and without the soft score mixed.
    """
    every = settings(hard_score_rate)
    raws = iter(raws)
    first = next(raws, None)
    if first is None:
        raise InputError("no raw detections to ablate")
    has_soft = first.has_soft
    runnable = [s for s in every if s.skip_reason(has_soft) is None]
    merged: list[dict[str, np.ndarray]] = [{} for _ in runnable]

    def jobs():
        for raw in itertools.chain([first], raws):
            name = image_key(raw.image_name)
            if name not in gt:
                raise InputError(
                    f"raw detections of {raw.image_name}, which is not in the ground truth: "
                    "is this the right annotations file (e.g. annotations_test.csv)?"
                )
            if raw.has_soft != has_soft:
                raise InputError(
                    f"{raw.image_name}: raw files with and without the Soft-IoU score mixed "
                    "(from two models?)"
                )
            yield raw, runnable

    bar = tqdm(_merged(jobs(), processes), total=total, unit="image", disable=not progress)
    for name, per_setting in bar:
        if name in merged[0]:  # runnable is never empty: Base & NMS needs nothing
            raise InputError(f"two raw-detections files of the image {name}")
        for table, rows in zip(merged, per_setting):
            table[name] = rows
    rows = []
    for setting in every:
        reason = setting.skip_reason(has_soft)
        metrics, count = None, 0
        if reason is None:
            dets, _ = align_detections(gt, merged[runnable.index(setting)])
            metrics = evaluate_detections(
                gt, dets, count_threshold=count_threshold, max_dets=max_dets
            )
            count = sum(len(boxes) for boxes in dets.values())
        rows.append(
            {
                "setting": setting.name,
                "merger": setting.merger,
                "hard_score_rate": setting.hard_score_rate,
                "selection": setting.selection if setting.merger == "em" else None,
                "paper": setting.paper,
                "metrics": _json_safe(metrics),
                "skipped": reason,
                "num_detections": count,
            }
        )
    return {
        "rows": rows,
        "settings": {
            "hard_score_rate": float(hard_score_rate),
            "has_soft": has_soft,
            "count_threshold": count_threshold,
            "max_dets": max_dets,
            "num_images": len(gt),
            "num_gt_boxes": int(sum(len(boxes) for boxes in gt.values())),
            "num_raw_images": len(merged[0]),
        },
        "images_without_raw": [name for name in gt if name not in merged[0]],
    }


def ablate_folder(raw_dir: str | os.PathLike, gt: Mapping[str, np.ndarray], **kwargs) -> dict:
    """:func:`ablation_report` over every raw-detections file of a folder (in file-name order).

    Raises:
        MissingInput: the folder does not exist or holds no raw-detections file.
    """
    return ablation_report(iter_raw(raw_dir), gt, total=_count_files(raw_dir), **kwargs)


def _json_safe(metrics: dict | None) -> dict | None:
    if metrics is None:
        return None
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in metrics.items()}


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------

# (column label, key of evaluate's metrics, key of the paper's row); AR's key follows max_dets.
COLUMNS = (
    ("AP", "AP", "AP"),
    ("AP.50", "AP50", None),
    ("AP.75", "AP75", "AP75"),
    ("AR{max_dets}", "AR{max_dets}", "AR300"),
    ("P@R=.5", "P@R=.5_IoU75", "P@R=.5"),
    ("MAE", "MAE", "MAE"),
    ("RMSE", "RMSE", "RMSE"),
)
CSV_KEYS = ("AP", "AP50", "AP75", "AR{max_dets}", "P@R=.5_IoU75", "P@R=.5_IoU50", "MAE", "RMSE")


def _columns(report: dict) -> list[tuple[str, str, str | None]]:
    max_dets = report["settings"]["max_dets"]
    return [(a.format(max_dets=max_dets), b.format(max_dets=max_dets), c) for a, b, c in COLUMNS]


def _number(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _r(rate: float) -> str:
    return f"{rate:g}"


def _table(report: dict) -> tuple[list[str], list[list[str]], list[list[str]], list[str]]:
    """Header, our rows, the paper's rows and the notes, as cells of text."""
    columns = _columns(report)
    header = ["setting", "r", *(label for label, _, _ in columns)]
    ours, paper, notes = [], [], []
    for row in report["rows"]:
        cells = [row["setting"], _r(row["hard_score_rate"])]
        if row["metrics"] is None:
            cells += ["-"] * len(columns)
            notes.append(f"{row['setting']}: {row['skipped']}")
        else:
            cells += [_number(row["metrics"].get(key)) for _, key, _ in columns]
        ours.append(cells)
        if row["paper"]:
            values = PAPER_RESULTS[row["paper"]]
            paper.append(
                [
                    row["setting"],
                    "",
                    *(_number(values.get(key)) if key else "-" for *_, key in columns),
                ]
            )
    return header, ours, paper, notes


def _summary(report: dict) -> str:
    s = report["settings"]
    counting = "every detection" if s["count_threshold"] is None else f"> {s['count_threshold']}"
    text = (
        f"{s['num_gt_boxes']} objects in {s['num_images']} images ({s['num_raw_images']} with raw "
        f"detections); pycocotools, maxDets {s['max_dets']}\n"
        f"r: confidence = r*hard + (1 - r)*soft; counted: confidence {counting}"
    )
    missing = report["images_without_raw"]
    if missing:
        text += f"\n{len(missing)} GT image(s) without raw detections count as images with none"
    return text


def format_text(report: dict) -> str:
    """The table as aligned text: ours, then the paper's rows (§12.3), then the notes."""
    header, ours, paper, notes = _table(report)
    widths = [max(len(cells[i]) for cells in [header, *ours, *paper]) for i in range(len(header))]

    def line(cells):
        first = f"{cells[0]:<{widths[0]}}"
        return "  ".join([first, *(f"{c:>{w}}" for c, w in zip(cells[1:], widths[1:]))]).rstrip()

    lines = [_summary(report), line(header), *map(line, ours)]
    if paper:
        lines += ["Paper (Table 2; voc_eval-style code, §12.3):", *map(line, paper)]
    return "\n".join(lines + notes)


def format_markdown(report: dict) -> str:
    """The table as Markdown: ours, then the paper's rows, then the notes."""
    header, ours, paper, notes = _table(report)

    def table(rows):
        out = [
            "| " + " | ".join(header) + " |",
            "|" + "|".join(["---"] + ["--:"] * (len(header) - 1)) + "|",
        ]
        return out + ["| " + " | ".join(cells) + " |" for cells in rows]

    parts = [_summary(report).replace("\n", "  \n"), "", *table(ours)]
    if paper:
        parts += ["", "Paper (Table 2; voc_eval-style code, §12.3):", "", *table(paper)]
    if notes:
        parts += ["", *(f"- {note}" for note in notes)]
    return "\n".join(parts) + "\n"


def write_outputs(report: dict, out_dir: str | os.PathLike) -> list[str]:
    """Write ``ablation.csv``, ``ablation.json`` and ``ablation.md`` into ``out_dir``.

    Returns:
        The three paths.
    """
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    paths = [os.path.join(out_dir, name) for name in OUTPUT_NAMES]
    max_dets = report["settings"]["max_dets"]
    keys = [key.format(max_dets=max_dets) for key in CSV_KEYS]
    with open(paths[0], "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["setting", "merger", "hard_score_rate", "selection", *keys, "skipped"])
        for row in report["rows"]:
            metrics = row["metrics"] or {}
            writer.writerow(
                [row["setting"], row["merger"], row["hard_score_rate"], row["selection"] or ""]
                + [_csv_value(metrics.get(key)) for key in keys]
                + [row["skipped"] or ""]
            )
    with open(paths[1], "w", encoding="utf-8") as f:
        json.dump({**report, "paper": _paper_rows(report)}, f, indent=2)
    with open(paths[2], "w", encoding="utf-8") as f:
        f.write(format_markdown(report))
    return paths


def _csv_value(value) -> str:
    return "" if value is None else repr(float(value))


def _paper_rows(report: dict) -> dict:
    return {row["paper"]: PAPER_RESULTS[row["paper"]] for row in report["rows"] if row["paper"]}


def read_report(path: str | os.PathLike) -> dict:
    """The report back from ``ablation.json``."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


__all__ = [
    "Setting",
    "ablate_folder",
    "ablation_report",
    "format_markdown",
    "format_text",
    "merger_rows",
    "read_report",
    "settings",
    "write_outputs",
]
