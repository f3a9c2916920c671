"""Shared fixtures: Keras session hygiene and a tiny synthetic SKU-110K dataset."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest  # noqa: E402


@pytest.fixture
def clear_keras_session():
    """Free Keras' global graph state after a test that builds models.

    Not autouse: ``clear_session`` runs a full garbage collection (~1.5 s once TensorFlow is
    loaded), so only the model-building test folders (tests/models, tests/layers, tests/bin) and
    tests/test_losses.py use it, through their own autouse fixtures.
    """
    yield
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
