"""The from-scratch recipe's flags: the cosine schedule and the BatchNorm settling checks."""

import math

import pytest

from object_detector_retinanet.keras_retinanet.bin import train
from object_detector_retinanet.keras_retinanet.training import driver


def test_cosine_schedule_warms_up_then_decays_to_zero():
    rate = driver.learning_rate(2e-4, "cosine", warmup_steps=100, total_steps=900)
    assert float(rate(0)) == 0.0
    assert float(rate(50)) == pytest.approx(1e-4)  # linear warm-up: half-way to 2e-4
    assert float(rate(100)) == pytest.approx(2e-4)
    # cosine over the remaining 800 steps: half-way (step 500) is 2e-4 * (1 + cos(pi / 2)) / 2
    assert float(rate(500)) == pytest.approx(1e-4, rel=1e-5)
    assert float(rate(300)) == pytest.approx(2e-4 * (1 + math.cos(math.pi / 4)) / 2, rel=1e-5)
    assert float(rate(900)) == pytest.approx(0.0, abs=1e-12)


def test_plateau_keeps_a_constant_rate_and_no_clip_means_none():
    optimizer = driver.make_optimizer(1e-4, 0)
    assert float(optimizer.learning_rate) == pytest.approx(1e-4)
    assert optimizer.clipnorm is None
    assert driver.make_optimizer(1e-4, 1e-3).clipnorm == pytest.approx(1e-3)


@pytest.fixture
def root(tiny_dataset, monkeypatch):
    monkeypatch.setenv("SKU110K_ROOT", str(tiny_dataset))
    return tiny_dataset


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--warmup-steps", "10", "csv"], "--warmup-steps needs --lr-schedule cosine"),
        (
            [
                "--lr-schedule",
                "cosine",
                "--warmup-steps",
                "20",
                "--epochs",
                "2",
                "--steps",
                "10",
                "csv",
            ],
            "less than --epochs x --steps",
        ),
        (["--freeze-bn-after", "1", "--epochs", "2", "csv"], "needs BatchNorm learning"),
        (
            ["--no-weights", "--freeze-bn-after", "2", "--epochs", "2", "csv"],
            "within [1, --epochs)",
        ),
        (
            ["--no-weights", "--freeze-bn-after", "1", "--epochs", "2", "--bn-images", "0", "csv"],
            "--bn-images must be at least 1",
        ),
    ],
)
def test_recipe_flag_errors(root, capsys, argv, message):
    with pytest.raises(SystemExit):
        train.parse_args(argv)
    assert message in capsys.readouterr().err


def test_from_scratch_recipe_parses(root):
    args = train.parse_args(
        [
            "--no-weights",
            "--lr-schedule",
            "cosine",
            "--warmup-steps",
            "100",
            "--epochs",
            "6",
            "--steps",
            "150",
            "--freeze-bn-after",
            "1",
            "csv",
        ]
    )
    assert not args.freeze_bn and args.freeze_bn_after == 1 and args.bn_images == 100
