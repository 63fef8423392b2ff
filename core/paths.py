"""Where the project keeps generated data, caches and runs (all outside git).

Each can be moved with an environment variable, so tests, CI and shared filesystems can point
them elsewhere without code changes.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _dir(env: str, default: Path) -> Path:
    path = Path(os.environ.get(env) or default).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_dir() -> Path:
    """Generated datasets (the demo set, extracted zips). MEDIMAGE_DATA_DIR overrides."""
    return _dir("MEDIMAGE_DATA_DIR", PROJECT_ROOT / "data")


def cache_dir() -> Path:
    """Scan caches. MEDIMAGE_CACHE_DIR overrides."""
    return _dir("MEDIMAGE_CACHE_DIR", PROJECT_ROOT / ".cache")


def models_dir() -> Path:
    """Run folders. MEDIMAGE_MODELS_DIR overrides (e.g. a shared filesystem)."""
    return _dir("MEDIMAGE_MODELS_DIR", PROJECT_ROOT / "models")
