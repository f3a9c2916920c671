"""Shared fixtures: Keras session hygiene and a tiny synthetic SKU-110K dataset."""

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest  # noqa: E402

#: Where tests build Keras models (first part of the path below tests/): Keras' global graph state
#: is freed after each of them. Not everywhere: ``clear_session`` runs a full garbage collection
#: (~1.5 s once TensorFlow is loaded).
MODEL_BUILDING_TESTS = frozenset({"bin", "layers", "models", "training", "test_losses.py"})
TESTS_DIR = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def _clear_keras_session(request):
    yield
    if request.node.path.relative_to(TESTS_DIR).parts[0] in MODEL_BUILDING_TESTS:
        if "keras" in sys.modules:
            sys.modules["keras"].backend.clear_session()


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """A tiny synthetic SKU-110K-layout dataset (128x128 shelves): 3 train, 1 val, 2 test images.

    Returns the dataset root: ``images/``, ``annotations/annotations_{train,val,test}.csv`` and
    ``class_mappings.csv``, as the CLIs expect under ``$SKU110K_ROOT``.
    """
    from object_detector_retinanet.keras_retinanet.utils.synthetic import write_dataset

    root = tmp_path_factory.mktemp("tiny_sku110k")
    write_dataset(root, counts={"train": 3, "val": 1, "test": 2}, height=128, width=128, seed=7)
    return root
