"""predict's command line: the bad-input path (one ``error: <file> line N: <problem>`` line, exit
status 2) and the flags for dataset-scale runs, on a fake network."""

import csv
import os
import shutil

import cv2
import numpy as np
import pytest

from object_detector_retinanet.keras_retinanet import inference
from object_detector_retinanet.keras_retinanet.bin import predict
from object_detector_retinanet.keras_retinanet.config import EmMergerConfig
from object_detector_retinanet.keras_retinanet.errors import INPUT_ERROR_STATUS, MissingInput
from object_detector_retinanet.keras_retinanet.inference import Predictor
from object_detector_retinanet.keras_retinanet.utils.raw_detections import load_raw
from object_detector_retinanet.keras_retinanet.utils.results_csv import ResultsWriter


@pytest.fixture
def weights(tmp_path):
    path = tmp_path / "w.weights.h5"
    path.write_bytes(b"")  # never opened when the input fails first
    return path


def test_malformed_annotation_row_exits_2_with_one_line(tiny_dataset, tmp_path, weights, capsys):
    annotations = tmp_path / "bad.csv"
    shutil.copy(tiny_dataset / "annotations" / "annotations_test.csv", annotations)
    lines = annotations.read_text().count("\n")
    with open(annotations, "a") as f:
        f.write("test_0.jpg,1,2,abc,4,object,128,128\n")
    argv = ["--base_dir", str(tiny_dataset / "images"), "--no-draw", "csv"]
    argv += [
        "--annotations",
        str(annotations),
        "--classes",
        str(tiny_dataset / "class_mappings.csv"),
    ]
    with pytest.raises(SystemExit) as exit_info:
        predict.main([*argv, str(weights)])
    assert exit_info.value.code == INPUT_ERROR_STATUS
    err = capsys.readouterr().err
    assert err.strip() == f"error: bad.csv line {lines + 1}: malformed x2: 'abc'"
    assert "Traceback" not in err


def test_unreadable_weights_file_exits_2(tiny_dataset, weights, capsys, monkeypatch):
    monkeypatch.setenv("SKU110K_ROOT", str(tiny_dataset))
    with pytest.raises(SystemExit) as exit_info:
        predict.main(["--no-draw", "--results-dir", str(weights.parent), "csv", str(weights)])
    assert exit_info.value.code == INPUT_ERROR_STATUS
    assert capsys.readouterr().err.startswith(f"error: {weights}: not a readable weights file")


def test_from_weights_names_a_missing_file(tmp_path):
    with pytest.raises(MissingInput, match="no such weights file"):
        Predictor.from_weights(tmp_path / "gone.weights.h5")


# --------------------------------------------------------------------------------------------------
# At dataset scale: --resume, --shard, skipped images, --images, --name-by-image, --batch-size,
# --save-raw. The network is a fake whose outputs depend on the image only, so runs compare exactly.
# --------------------------------------------------------------------------------------------------
SIDE = ["--image-min-side", "64", "--image-max-side", "96"]


class ContentNetwork:
    """Boxes in clusters drawn from a seed that is a function of the image: the same image gives
    the same outputs in any batch, in any run. A uniform image gives none. ``stop_after``: raise
    ``KeyboardInterrupt`` when asked for more images than that."""

    def __init__(self, stop_after=None):
        self.images = 0
        self.batches = []
        self.stop_after = stop_after

    def __call__(self, batch):
        if self.stop_after is not None and self.images + len(batch) > self.stop_after:
            raise KeyboardInterrupt("stopped by the test")
        self.images += len(batch)
        self.batches.append(len(batch))
        per_image = [self._one(image) for image in batch]
        return tuple(np.stack([outputs[k] for outputs in per_image]) for k in range(4))

    @staticmethod
    def _one(image, clusters=3, per_cluster=4, rows=16):
        boxes = np.full((rows, 4), -1.0, np.float32)
        hard = np.full(rows, -1.0, np.float32)
        soft = np.full((rows, 1), -1.0, np.float32)
        labels = np.full(rows, -1, np.int32)
        if np.ptp(image.reshape(-1, 3), axis=0).max() > 0:  # not one colour
            rng = np.random.default_rng(int(np.abs(image).sum() * 1000) % 2**32)
            height, width = image.shape[:2]
            k = 0
            for _ in range(clusters):
                cx, cy = rng.uniform(0.25, 0.75) * width, rng.uniform(0.25, 0.75) * height
                for _ in range(per_cluster):
                    x1, y1 = cx - 10 + rng.uniform(-2, 2), cy - 10 + rng.uniform(-2, 2)
                    boxes[k] = [x1, y1, x1 + 20, y1 + 20]
                    hard[k], soft[k, 0] = rng.uniform(0.3, 0.95, 2)
                    labels[k] = 0
                    k += 1
        return boxes, hard, labels, soft


class _Networks(list):
    """The networks fake_model made, newest last; ``settings`` go to the next ones."""

    settings: dict


@pytest.fixture
def fake_model(monkeypatch):
    """Predictor.from_weights builds a Predictor on a ContentNetwork; returns the networks made."""
    networks = _Networks()
    networks.settings = {}

    def from_weights(cls, model_path, backbone="resnet50", num_classes=1, **kwargs):
        selection, merger = kwargs.pop("selection"), kwargs.pop("merger")
        assert merger == "em"
        rate = kwargs["hard_score_rate"]
        kwargs["merger_config"] = EmMergerConfig(selection=selection, hard_score_rate=rate)
        networks.append(ContentNetwork(**networks.settings))
        return cls(networks[-1], **kwargs)

    monkeypatch.setattr(Predictor, "from_weights", classmethod(from_weights))
    return networks


@pytest.fixture
def shelves(tmp_path):
    """Seven noise images (64 x 80; one 80 x 64) and one uniform one (no detections), sorted."""
    folder = tmp_path / "shelves"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(7):
        shape = (80, 64, 3) if i == 5 else (64, 80, 3)
        cv2.imwrite(str(folder / f"shelf_{i}.png"), rng.integers(0, 255, shape, dtype=np.uint8))
    cv2.imwrite(str(folder / "shelf_3b.png"), np.full((64, 80, 3), 90, np.uint8))  # no detection
    return folder


def _predict(tmp_path, images, *flags, name="out", draw=False):
    """Run predict on ``images`` (csv --images PATH); returns the results path."""
    argv = [*SIDE, "--results-dir", str(tmp_path / name), *flags]
    argv += ["--save-path", str(tmp_path / f"{name}_png")] if draw else ["--no-draw"]
    weights = tmp_path / "w.weights.h5"
    weights.write_bytes(b"")
    return predict.main([*argv, "csv", "--images", str(images), str(weights)])


def _resume(tmp_path, shelves, results):
    """predict --resume RESULTS csv --images SHELVES."""
    argv = [*SIDE, "--no-draw", "--resume", str(results), "csv", "--images", str(shelves)]
    return predict.main([*argv, str(tmp_path / "w.weights.h5")])


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def _done(path):
    with open(f"{path}.done") as handle:
        return handle.read().splitlines()


def _image_ids(path):
    return list(dict.fromkeys(row[0] for row in _rows(path)[1:]))


def test_a_run_lists_every_finished_image_beside_its_csv(tmp_path, shelves, fake_model):
    results = _predict(tmp_path, shelves)
    names = sorted(p.name for p in shelves.iterdir())
    assert _done(results) == [f"shelves/{name}" for name in names]
    assert "shelves/shelf_3b.png" not in _image_ids(results)  # no detection: done, but no row
    assert len(_image_ids(results)) == 7


@pytest.mark.parametrize("stop_after", [1, 4, 6])
def test_an_interrupted_run_resumes_to_the_uninterrupted_result(
    tmp_path, shelves, fake_model, stop_after
):
    whole = _predict(tmp_path, shelves, name="whole")
    fake_model.settings["stop_after"] = stop_after
    with pytest.raises(KeyboardInterrupt):
        _predict(tmp_path, shelves, name="cut")
    (cut,) = (tmp_path / "cut").glob("*.csv")
    assert len(_done(cut)) == stop_after
    fake_model.settings.clear()
    assert _resume(tmp_path, shelves, cut) == str(cut)
    assert _rows(cut) == _rows(whole)  # each image once, in order, the same rows
    assert _done(cut) == _done(whole)
    assert fake_model[-1].images == 8 - stop_after  # finished images are not predicted again


def test_resume_redoes_an_image_cut_short_and_drops_a_half_line(tmp_path, shelves, fake_model):
    whole = _predict(tmp_path, shelves, name="whole")
    rows, done = _rows(whole), _done(whole)
    # a crash while image 2's rows were written: two of them and half of a third reached the disk
    cut = tmp_path / "cut.csv"
    image_2 = [i for i, row in enumerate(rows) if row[0] == "shelves/shelf_2.png"]
    text = "".join(",".join(row) + "\r\n" for row in rows[: image_2[0] + 2]) + "shelves/shelf_2.p"
    cut.write_text(text, newline="")
    (tmp_path / "cut.csv.done").write_text("\n".join(done[:2]) + "\nshelves/sh", newline="")
    _resume(tmp_path, shelves, cut)
    assert _rows(cut) == rows
    assert _done(cut) == done
    assert fake_model[-1].images == 6


def test_resume_without_the_done_file_redoes_the_last_image_of_the_csv(
    tmp_path, shelves, fake_model
):
    whole = _predict(tmp_path, shelves, name="whole")
    cut = tmp_path / "cut.csv"
    rows = _rows(whole)
    kept = [row for row in rows if row[0] <= "shelves/shelf_1.png"]  # header sorts first
    cut.write_text("".join(",".join(row) + "\r\n" for row in kept), newline="")
    _resume(tmp_path, shelves, cut)
    assert _rows(cut) == rows
    assert fake_model[-1].images == 7  # shelf_1 again, as its rows may have been cut short


def test_resume_needs_a_results_csv(tmp_path, shelves, fake_model, capsys):
    other = tmp_path / "other.csv"
    other.write_text("a,b\n")
    (tmp_path / "w.weights.h5").write_bytes(b"")
    with pytest.raises(SystemExit) as exit_info:
        _resume(tmp_path, shelves, other)
    assert exit_info.value.code == INPUT_ERROR_STATUS
    assert "not a results CSV" in capsys.readouterr().err


def test_shards_concatenate_to_the_whole(tmp_path, shelves, fake_model):
    whole = _rows(_predict(tmp_path, shelves, name="whole"))
    parts = [_predict(tmp_path, shelves, "--shard", f"{i}/3", name="shards") for i in (1, 2, 3)]
    assert len(set(parts)) == 3 and all(f"_shard{i}of3" in p for i, p in zip((1, 2, 3), parts))
    rows = [row for part in parts for row in _rows(part)[1:]]
    assert rows == whole[1:]
    assert sum(len(_done(part)) for part in parts) == 8


@pytest.mark.parametrize("value", ["0/3", "4/3", "2", "a/b", "1/0"])
def test_bad_shards_are_argparse_errors(tmp_path, value, capsys):
    (tmp_path / "w.weights.h5").write_bytes(b"")
    with pytest.raises(SystemExit) as exit_info:
        predict.parse_args(
            ["--shard", value, "csv", "--images", str(tmp_path), str(tmp_path / "w.weights.h5")]
        )
    assert exit_info.value.code == 2
    assert "--shard" in capsys.readouterr().err


def test_an_unreadable_image_is_skipped_listed_and_exits_1(tmp_path, shelves, fake_model, capsys):
    (shelves / "broken.png").write_bytes(b"not a png")
    with pytest.warns(RuntimeWarning, match="broken.png"):
        with pytest.raises(SystemExit) as exit_info:
            _predict(tmp_path, shelves)
    assert exit_info.value.code == predict.SKIPPED_IMAGES_STATUS == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: 1 of 9 images could not be read and were skipped: broken.png (")
    (results,) = (tmp_path / "out").glob("*.csv")
    assert len(_image_ids(results)) == 7 and len(_done(results)) == 8
    assert "shelves/broken.png" not in _done(results)  # retried by --resume


def test_a_listed_image_that_does_not_exist_is_skipped_and_counted(
    tmp_path, shelves, fake_model, capsys
):
    names = tmp_path / "names.csv"
    names.write_text("shelf_1.png\ngone.png\nshelf_2.png\n")
    with pytest.warns(RuntimeWarning, match="gone.png"):
        with pytest.raises(SystemExit) as exit_info:
            _predict(tmp_path, names, "--base_dir", str(shelves))
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: 1 of 3 images could not be read and were skipped: gone.png (")
    (results,) = (tmp_path / "out").glob("*.csv")
    assert _image_ids(results) == ["shelves/shelf_1.png", "shelves/shelf_2.png"]


def test_one_image_and_a_list_of_names(tmp_path, shelves, fake_model):
    whole = _rows(_predict(tmp_path, shelves, name="whole"))
    one = _rows(_predict(tmp_path, shelves / "shelf_4.png", name="one"))
    assert one[1:] == [row for row in whole if row[0] == "shelves/shelf_4.png"]
    names = tmp_path / "names.csv"
    names.write_text("shelf_6.png\nshelf_0.png\n")
    listed = _predict(tmp_path, names, "--base_dir", str(shelves), name="listed")
    assert _image_ids(listed) == ["shelves/shelf_6.png", "shelves/shelf_0.png"]


def test_drawings_named_by_index_or_by_image(tmp_path, shelves, fake_model):
    _predict(tmp_path, shelves, name="index", draw=True)
    assert sorted(os.listdir(tmp_path / "index_png")) == [f"{i}.png" for i in range(8)]
    _predict(tmp_path, shelves, "--name-by-image", name="named", draw=True)
    assert sorted(os.listdir(tmp_path / "named_png")) == sorted(os.listdir(shelves))


def test_batch_size_2_equals_batch_size_1(tmp_path, shelves, fake_model):
    one = _rows(_predict(tmp_path, shelves, name="one"))
    two = _rows(_predict(tmp_path, shelves, "--batch-size", "2", name="two"))
    assert two == one
    # shelf_5 is 80 x 64: its input shape differs from shelf_6's, so their pair runs as 1 + 1
    assert fake_model[-1].batches == [2, 2, 2, 1, 1]


def test_saved_raw_detections_re_merge_to_the_results(tmp_path, shelves, fake_model, monkeypatch):
    merged_inputs = {}
    real_merge = inference.merge_detections

    def recording_merge(detections, shape, config=None):
        merged_inputs[len(merged_inputs)] = detections.copy()
        return real_merge(detections, shape, config)

    monkeypatch.setattr(inference, "merge_detections", recording_merge)
    raw_dir = tmp_path / "raw"
    results = _predict(tmp_path, shelves, "--save-raw", str(raw_dir), "--hard_score_rate=0.3")
    raws = [load_raw(raw_dir / f"{name}.npz") for name in sorted(os.listdir(shelves))]
    assert len(os.listdir(raw_dir)) == 8
    for i, raw in enumerate(raws):
        assert raw.has_soft and raw.image_shape in ((64, 80), (80, 64))
        np.testing.assert_array_equal(raw.rows(0.3), merged_inputs[i])  # float64, exactly
    monkeypatch.setattr(inference, "merge_detections", real_merge)
    again = tmp_path / "again.csv"
    with ResultsWriter(again) as writer:
        for raw in raws:
            merged = real_merge(raw.rows(0.3), raw.image_shape, EmMergerConfig(hard_score_rate=0.3))
            writer.write_image(f"shelves/{raw.image_name}", merged)
    assert _rows(again) == _rows(results)


def test_a_real_network_gives_the_same_outputs_in_a_batch_up_to_rounding():
    """TensorFlow's convolutions pick their kernels by batch size (oneDNN, cuDNN), so the network
    on a batch agrees with it on single images to float rounding, not bit for bit."""
    import keras

    from object_detector_retinanet.keras_retinanet.models.retinanet import build_retinanet
    from object_detector_retinanet.keras_retinanet.models.soft_iou import add_iou_head

    keras.utils.set_random_seed(0)
    model = add_iou_head(build_retinanet(num_classes=1), num_classes=1)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (64, 80, 3), dtype=np.uint8) for _ in range(3)]
    batch = np.stack([inference.network_input(image, 64, 96)[0] for image in images])
    together = [np.asarray(output) for output in model(batch, training=False)]
    for i in range(len(images)):
        single = model(batch[i : i + 1], training=False)
        for a, b in zip(single, together):  # regression, classification, Soft-IoU
            np.testing.assert_allclose(np.asarray(a)[0], b[i], rtol=1e-3, atol=1e-3)
