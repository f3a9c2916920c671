"""Installs the SKU-110K package and its console scripts (the same main() functions as bin/)."""

import os

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def _requirements():
    with open(os.path.join(HERE, "requirements.txt"), encoding="utf-8") as f:
        lines = [line.split("#", 1)[0].strip() for line in f]
    return [line for line in lines if line and not line.startswith("pytest")]


BIN = "object_detector_retinanet.keras_retinanet.bin"

setup(
    name="sku110k",
    version="1.0.0",
    description="Precise Detection in Densely Packed Scenes (SKU-110K, CVPR 2019), Keras 3",
    long_description=open(os.path.join(HERE, "README.md"), encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11",
    packages=find_packages(include=["object_detector_retinanet", "object_detector_retinanet.*"]),
    package_data={"object_detector_retinanet.keras_retinanet.bin": ["class_mappings.csv"]},
    # `pip install --no-deps -e .` after `requirements.txt` (what scripts/ do) keeps the
    # CPU/GPU TensorFlow choice; a plain `pip install .` pulls the listed stack.
    install_requires=_requirements(),
    entry_points={
        "console_scripts": [
            f"sku110k-train={BIN}.train:main",
            f"sku110k-train-iou={BIN}.train_iou:main",
            f"sku110k-predict={BIN}.predict:main",
            f"sku110k-evaluate={BIN}.evaluate:main",
            f"sku110k-synth={BIN}.synth:main",
            f"sku110k-ablation={BIN}.ablation:main",
            f"sku110k-convert={BIN}.convert_model:main",
        ]
    },
)
