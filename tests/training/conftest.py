"""Tests here build Keras models: clear the Keras session after each one."""

import pytest


@pytest.fixture(autouse=True)
def _keras_session(clear_keras_session):
    yield
