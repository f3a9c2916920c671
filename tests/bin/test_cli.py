"""The three CLIs: argument checks (fast) and the whole recipe end to end on tiny data (slow)."""

import glob
import os

import numpy as np
import pytest

from object_detector_retinanet.keras_retinanet.bin import predict, train, train_iou


@pytest.fixture
def root(tiny_dataset, monkeypatch, tmp_path):
    """Point the default data root at the tiny dataset; outputs go to tmp_path."""
    monkeypatch.setenv("SKU110K_ROOT", str(tiny_dataset))
    return tiny_dataset


def _outputs(tmp_path):
    return ["--snapshot-path", str(tmp_path / "snap"), "--tensorboard-dir", str(tmp_path / "tb")]


def test_readme_command_shapes_parse(root, tmp_path):
    args = train.parse_args(["csv"])  # `train.py csv`: everything from the root
    assert args.annotations == os.path.join(root, "annotations", "annotations_train.csv")
    assert args.base_dir == os.path.join(root, "images")
    assert args.val_annotations == os.path.join(root, "annotations", "annotations_val.csv")
    assert args.imagenet_weights is True and args.freeze_bn  # the original's defaults
    assert (args.epochs, args.steps, args.batch_size, args.lr) == (150, 10000, 1, 1e-5)
    weights = tmp_path / "resnet50_csv_10.weights.h5"
    weights.write_bytes(b"")
    args = train_iou.parse_args(["--weights", str(weights), "csv"])
    assert args.weights == str(weights) and args.imagenet_weights is False
    args = predict.parse_args(["csv", str(weights), "--hard_score_rate=0.3"])
    assert args.model == str(weights) and args.hard_score_rate == 0.3
    assert args.annotations == os.path.join(root, "annotations", "annotations_test.csv")
    args = predict.parse_args(["csv", str(weights), "--hard_score_rate="])  # '' -> 0.5
    assert args.hard_score_rate == 0.5


def test_relative_paths_are_taken_as_given(root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.weights.h5").write_bytes(b"")
    args = predict.parse_args(["csv", "w.weights.h5"])  # B1: not joined onto the data root
    assert args.model == str(tmp_path / "w.weights.h5")


def test_b20_train_iou_requires_weights(root, capsys):
    with pytest.raises(SystemExit):
        train_iou.parse_args(["csv"])
    assert "needs the stage-1 model: pass --weights" in capsys.readouterr().err


def test_b22_validation_is_optional(root):
    assert train.parse_args(["csv", "--val-annotations", ""]).val_annotations is None


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--no-weights", "--weights", "w.h5", "csv"], "not allowed with argument"),
        (["--multi-gpu", "2", "csv"], "must be at least --multi-gpu"),
        (["--batch-size", "0", "csv"], "--batch-size must be at least 1"),
        (["--weights", "missing.h5", "csv"], "file not found"),
        (["csv", "--annotations", "missing.csv"], "training annotations not found"),
        (["csv", "--base_dir", "nowhere"], "image folder not found"),
    ],
)
def test_bad_flags_fail_before_tensorflow(root, capsys, argv, message):
    with pytest.raises(SystemExit):
        train.parse_args(argv)
    assert message in capsys.readouterr().err


def test_predict_rejects_missing_model(root, capsys):
    with pytest.raises(SystemExit):
        predict.parse_args(["csv", "nope.weights.h5"])
    assert "model file not found" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- #
# End to end: train -> resume -> train_iou -> predict, on 128x128 synthetic shelves
# ------------------------------------------------------------------------------------------- #
SMALL = ["--image-min-side", "128", "--image-max-side", "128", "--verbose", "0", "--seed", "0"]


@pytest.fixture(scope="module")
def recipe(tiny_dataset, tmp_path_factory):
    """Run the recipe once; the tests below check what each step wrote."""
    out = tmp_path_factory.mktemp("recipe")
    os.environ["SKU110K_ROOT"] = str(tiny_dataset)
    try:
        common = SMALL + _outputs(out) + ["--lr", "1e-4"]
        h1 = train.main(["--no-weights", "--epochs", "1", "--steps", "2", *common, "csv"])
        first = glob.glob(str(out / "snap" / "*" / "resnet50_csv_01.weights.h5"))
        h2 = train.main(["--snapshot", first[0], "--epochs", "2", "--steps", "2", *common, "csv"])
        second = glob.glob(str(out / "snap" / "*" / "resnet50_csv_02.weights.h5"))
        h3 = train_iou.main(
            ["--weights", second[0], "--epochs", "1", "--steps", "2", *common, "csv"]
        )
        iou = glob.glob(str(out / "snap" / "*" / "iou_resnet50_csv_01.weights.h5"))
        h4 = train_iou.main(["--snapshot", iou[0], "--epochs", "2", "--steps", "1", *common, "csv"])
        iou2 = glob.glob(str(out / "snap" / "*" / "iou_resnet50_csv_02.weights.h5"))
        results = predict.main(
            [
                "--image-min-side",
                "128",
                "--image-max-side",
                "128",
                "--save-path",
                str(out / "drawn"),
                "--results-dir",
                str(out / "results"),
                "csv",
                iou[0],
                "--hard_score_rate=0.5",
            ]
        )
    finally:
        del os.environ["SKU110K_ROOT"]
    return dict(
        out=out,
        h1=h1,
        h2=h2,
        h3=h3,
        h4=h4,
        first=first,
        second=second,
        iou=iou,
        iou2=iou2,
        results=results,
    )


@pytest.mark.slow
def test_train_writes_snapshot_and_tensorboard(recipe):
    assert len(recipe["first"]) == 1
    assert glob.glob(str(recipe["out"] / "tb" / "*" / "train" / "events.out.tfevents.*"))
    assert set(recipe["h1"].history) >= {"loss", "regression_loss", "classification_loss"}
    assert np.isfinite(recipe["h1"].history["loss"]).all()


@pytest.mark.slow
def test_resume_continues_the_epoch_count(recipe):
    assert recipe["h2"].epoch == [1]  # 0-based: the second epoch only
    assert len(recipe["second"]) == 1


@pytest.mark.slow
def test_train_iou_writes_a_loadable_snapshot(recipe):
    assert len(recipe["iou"]) == 1
    assert np.isfinite(recipe["h3"].history["loss"]).all()


@pytest.mark.slow
def test_b21_train_iou_resumes_its_own_snapshot(recipe):
    assert recipe["h4"].epoch == [1] and len(recipe["iou2"]) == 1


@pytest.mark.slow
def test_predict_writes_results_and_drawings(recipe):
    path = recipe["results"]
    assert os.path.basename(path).startswith("detections_output_iou_0.5_")
    assert " " not in os.path.basename(path) and ":" not in os.path.basename(path)  # B18
    with open(path) as f:
        header = f.readline().strip()
    assert header == "image_id,x1,y1,x2,y2,confidence,hard_score"
    assert sorted(os.listdir(recipe["out"] / "drawn")) == ["0.png", "1.png"]  # B3: --save-path


def test_b24_multi_class_map_is_rejected_before_stage2_and_predict(root, tmp_path):
    classes = tmp_path / "classes.csv"
    classes.write_text("object,0\nshelf_tag,1\n")
    weights = tmp_path / "resnet50_csv_01.weights.h5"
    weights.write_bytes(b"")  # never opened: the check comes first
    with pytest.raises(SystemExit, match="single class"):
        train_iou.main(["--weights", str(weights), "csv", "--classes", str(classes)])
    with pytest.raises(SystemExit, match="single-class"):
        predict.main(["csv", "--classes", str(classes), str(weights)])


def test_predict_selection_needs_a_soft_score(root, tmp_path, capsys):
    weights = tmp_path / "w.weights.h5"
    weights.write_bytes(b"")
    assert predict.parse_args(["--selection", "soft_iou", "csv", str(weights)]).selection == (
        "soft_iou"
    )
    with pytest.raises(SystemExit):
        predict.parse_args(["--selection", "soft_iou", "csv", str(weights), "--hard_score_rate=1"])
    assert "needs the soft score" in capsys.readouterr().err


def test_an_empty_validation_csv_means_no_validation(root, tmp_path, capsys):
    empty = tmp_path / "annotations_val.csv"
    empty.write_text("")
    assert train.parse_args(["csv", "--val-annotations", str(empty)]).val_annotations is None
    assert "training without validation" in capsys.readouterr().out


def test_offline_imagenet_download_exits_with_advice(root, monkeypatch, capsys):
    from object_detector_retinanet.keras_retinanet.models import backbone

    def offline(*args, **kwargs):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(backbone.keras.utils, "get_file", offline)
    with pytest.raises(SystemExit, match="--imagenet-weights PATH"):
        train.main(["csv"])  # the default: ImageNet weights
