"""Data root and paths (§3, B1, B18, B19, B27)."""

import importlib
import os
import re

from object_detector_retinanet import utils


def test_b1_default_root_is_documents_sku110k_on_every_os(monkeypatch, tmp_path):
    monkeypatch.delenv("SKU110K_ROOT", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # ~ expands from HOME (USERPROFILE on Windows)
    monkeypatch.setenv("USERPROFILE", str(tmp_path))
    assert utils.root_dir() == os.path.join(str(tmp_path), "Documents", "SKU110K")
    assert utils.image_path() == os.path.join(utils.root_dir(), "images")
    assert utils.annotation_path() == os.path.join(utils.root_dir(), "annotations")


def test_b1_root_is_overridable_and_read_on_every_call(monkeypatch, tmp_path):
    monkeypatch.setenv("SKU110K_ROOT", str(tmp_path / "data"))
    assert utils.root_dir() == str(tmp_path / "data")
    monkeypatch.setenv("SKU110K_ROOT", str(tmp_path / "other"))
    assert utils.root_dir() == str(tmp_path / "other")


def test_b1_user_paths_are_taken_as_given(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SKU110K_ROOT", "/somewhere/else")
    assert utils.resolve_path("snap/model.h5") == str(tmp_path / "snap" / "model.h5")
    assert utils.resolve_path(str(tmp_path / "x")) == str(tmp_path / "x")
    assert utils.resolve_path(None) is None


def test_b18_b19_timestamps_are_filesystem_safe():
    stamp = utils.safe_timestamp(0.0)
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}", stamp)


def test_b27_no_work_at_import(monkeypatch, tmp_path):
    monkeypatch.setenv("SKU110K_ROOT", str(tmp_path / "never_created"))
    importlib.reload(utils)
    assert not (tmp_path / "never_created").exists()
    assert not hasattr(utils, "DEBUG_MODE")


def test_create_folder_is_idempotent(tmp_path):
    target = tmp_path / "a" / "b"
    assert utils.create_folder(target) == str(target) and target.is_dir()
    assert utils.create_folder(target) == str(target)
