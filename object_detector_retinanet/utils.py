"""Data-root and path helpers (§3).

The original hard-coded ``~/Documents/SKU110K`` (and returned ``None`` on macOS, B1) and switched
folders at import time with ``DEBUG_MODE`` (B27). Here the root is only a *default*: the environment
variable ``SKU110K_ROOT`` overrides it, every CLI path flag overrides both, and nothing happens at
import time. Paths are plain :class:`os.PathLike`-friendly strings built with ``os.path.join`` so
they follow the host's rules on Linux, macOS and Windows alike.
"""

from __future__ import annotations

import os
import re
import time

ROOT_ENV_VAR = "SKU110K_ROOT"
DEFAULT_ROOT = os.path.join("~", "Documents", "SKU110K")


def root_dir() -> str:
    """The SKU-110K data root: ``$SKU110K_ROOT`` if set, else ``~/Documents/SKU110K`` (B1).

    The result is absolute and user-expanded; it is computed on every call, never cached.
    """
    root = os.environ.get(ROOT_ENV_VAR) or DEFAULT_ROOT
    return os.path.abspath(os.path.expanduser(root))


def image_path() -> str:
    """Default image folder, ``<root>/images``."""
    return os.path.join(root_dir(), "images")


def annotation_path() -> str:
    """Default annotation folder, ``<root>/annotations``."""
    return os.path.join(root_dir(), "annotations")


def resolve_path(path: str | os.PathLike | None) -> str | None:
    """A user-supplied path taken as given: ``~`` expanded, relative paths against the working dir.

    Unlike the original (B1), nothing is joined onto the data root.
    """
    if path is None:
        return None
    return os.path.abspath(os.path.expanduser(os.fspath(path)))


def create_folder(path: str | os.PathLike) -> str:
    """Create ``path`` (and parents) if needed and return it; silent when it exists."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        os.makedirs(path, exist_ok=True)
        print(f"Created folder {path}")
    return path


def safe_timestamp(when: float | None = None) -> str:
    """A timestamp valid as a file or folder name on every OS (B18, B19).

    The original used ``time.strftime('%c')`` with spaces and colons left in some places; this is
    locale-independent and sortable, e.g. ``2019-05-02_17-07-11``.
    """
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S", time.localtime(when))
    return re.sub(r"[^0-9A-Za-z_.-]", "_", stamp)
