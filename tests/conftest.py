"""Shared fixtures: every test writes caches and generated data under a temp folder, never the repo."""

from __future__ import annotations

import io
import os
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHEST_XRAY = Path(__file__).resolve().parents[2] / "shared" / "data" / "chest_xray" / "train"


@pytest.fixture(autouse=True, scope="session")
def _isolated_dirs(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("medimage")
    for name in ("MEDIMAGE_DATA_DIR", "MEDIMAGE_CACHE_DIR", "MEDIMAGE_MODELS_DIR"):
        os.environ[name] = str(root / name.split("_")[1].lower())
    yield


@pytest.fixture(autouse=True)
def _fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Each test gets its own scan cache, so one test's cached facts cannot hide another's bug. The shared weights
    folder is not searched unless a test names it (MEDIMAGE_WEIGHTS_DIR), so "missing weights" paths are tested here too."""
    from core import weights

    monkeypatch.setenv("MEDIMAGE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(weights, "SHARED_WEIGHTS", tmp_path / "no-shared-weights")


@pytest.fixture(autouse=True)
def _through_app(monkeypatch: pytest.MonkeyPatch) -> None:
    """AppTest runs go through app.py, as on a server. AppTest puts Streamlit back in its legacy multipage mode before
    each run (this app has a pages/ folder), where a switched-to page ran alone: without app.py's navigation, the
    sidebar it draws after the page, or its catch of pages.flow.PageEnd."""
    from streamlit.runtime.pages_manager import PagesManager

    init = PagesManager.__init__

    def init_then_leave_legacy(self, *args, **kwargs) -> None:
        init(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", init_then_leave_legacy)


def write_png(path: Path, size=(16, 12), value: int = 128, mode: str = "L") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((size[1], size[0]), value, np.uint8)
    Image.fromarray(arr).convert(mode).save(path)
    return path


def make_class_folders(root: Path, counts: dict[str, int], size=(16, 12)) -> Path:
    for label, n in counts.items():
        for i in range(n):
            write_png(root / label / f"{label}_{i}.png", size=size, value=(i * 7) % 255)
    return root


def make_separable_classes(root: Path, levels: dict[str, int], n: int = 16, size: int = 32) -> Path:
    """Class folders of noisy grey images, one brightness per class: classes a model tells apart in an epoch or two."""
    rng = np.random.default_rng(0)
    for label, level in levels.items():
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(np.clip(level + rng.normal(0, 20, (size, size)), 0, 255).astype(np.uint8)).save(folder / f"{label}{i}.png")
    return root


def zip_bytes(entries: dict[str, bytes], symlinks: tuple[str, ...] = ()) -> bytes:
    """A zip of the entries, plus symbolic-link members pointing at /etc/passwd (for the unsafe cases)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        for name in symlinks:
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return buf.getvalue()
