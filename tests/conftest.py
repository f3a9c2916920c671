"""Shared fixtures: Keras session hygiene and a tiny synthetic SKU-110K dataset."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _clear_keras_session():
    """Free Keras' global graph state between tests (only when a test imported Keras)."""
    yield
    if "keras" in sys.modules:
        sys.modules["keras"].backend.clear_session()
