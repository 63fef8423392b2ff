"""Duplicates and split leakage on a planted set: exact copies, a re-encoded near twin, cross-split."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from core import duplicates
from core.dataset import DEMO, open_dataset
from core.demo_data import make_phantom
from tests.conftest import CHEST_XRAY


def _picture(seed: int) -> np.ndarray:
    """A distinct X-ray-like picture (a demo phantom): realistic detail, unlike flat test patterns."""
    return make_phantom(np.random.default_rng(seed), pneumonia=seed % 2 == 1, size=128)


@pytest.fixture
def planted(tmp_path: Path) -> pd.DataFrame:
    rows = []
    for k in range(12):
        split = ("train", "val", "test")[k % 3]
        path = tmp_path / split / f"img{k}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), _picture(k))
        rows.append((str(path), "a" if k % 2 else "b", split))
    # exact copy inside train, and an exact copy of a train image placed in test (leak)
    shutil.copy(rows[0][0], tmp_path / "train" / "copy_of_img0.png")
    rows.append((str(tmp_path / "train" / "copy_of_img0.png"), rows[0][1], "train"))
    shutil.copy(rows[3][0], tmp_path / "test" / "leak_of_img3.png")
    rows.append((str(tmp_path / "test" / "leak_of_img3.png"), rows[3][1], "test"))
    # near twin: img6 (train) re-encoded as a slightly brighter JPEG in val, with the other label
    near = np.clip(_picture(6).astype(int) + 6, 0, 255).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "val" / "near_img6.jpg"), near, [cv2.IMWRITE_JPEG_QUALITY, 70])
    rows.append((str(tmp_path / "val" / "near_img6.jpg"), "a", "val"))
    return pd.DataFrame(rows, columns=["path", "label", "split"])


def test_planted_duplicates_and_leakage(planted: pd.DataFrame) -> None:
    hashed = duplicates.image_hashes(planted)
    assert len(hashed) == len(planted) and hashed["phash"].str.len().eq(64).all()
    pairs = duplicates.find_duplicates(hashed)
    found = {(Path(a).name, Path(b).name, kind) for a, b, kind in pairs[["path_a", "path_b", "kind"]].itertuples(index=False)}
    assert ("img0.png", "copy_of_img0.png", "exact") in found
    assert ("img3.png", "leak_of_img3.png", "exact") in found
    assert ("img6.png", "near_img6.jpg", "near") in found
    assert len(pairs) == 3  # the 12 distinct pictures pair with nothing
    summary = duplicates.summarize(pairs)
    assert summary.exact_pairs == 2 and summary.near_pairs == 1
    assert summary.cross_split_pairs == 2 and summary.test_with_train_twin == 1 and summary.val_with_train_twin == 1
    assert summary.conflicting_labels == 1
    near = pairs.loc[pairs["kind"] == "near", "distance"].iloc[0]
    assert 0 < near <= duplicates.DEFAULT_MAX_DISTANCE
    assert len(duplicates.find_duplicates(hashed, max_distance=near - 1)) == 2  # the threshold is honoured


def test_hashes_are_cached_and_bad_files_dropped(planted: pd.DataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = Path(planted["path"][0]).with_name("broken.png")
    broken.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    table = pd.concat([planted, pd.DataFrame([(str(broken), "a", "train")], columns=planted.columns)], ignore_index=True)
    first = duplicates.image_hashes(table)
    assert str(broken) not in set(first["path"]) and len(first) == len(planted)
    calls = []
    monkeypatch.setattr(duplicates, "read_image", lambda *a, **k: calls.append(a) or pytest.fail("re-hashed"))
    assert duplicates.image_hashes(table)["phash"].tolist() == first["phash"].tolist()
    assert calls == []


def test_bad_threshold_is_refused(planted: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="between 0 and 256"):
        duplicates.find_duplicates(duplicates.image_hashes(planted), max_distance=257)


def test_demo_set_has_no_duplicates() -> None:
    """The phantoms share anatomy but each one varies enough that the default threshold finds no twins."""
    pairs = duplicates.find_duplicates(duplicates.image_hashes(open_dataset(DEMO).table))
    assert len(pairs) == 0


def _all_pairs(codes: np.ndarray, max_distance: int) -> set[tuple[int, int, int]]:
    """The reference: every pair compared, XOR + popcount."""
    words = codes.view(np.uint64)
    found = set()
    for i in range(len(words)):
        dist = np.bitwise_count(words[i] ^ words[i + 1 :]).sum(axis=1)
        found.update((i, i + 1 + int(j), int(dist[j])) for j in np.nonzero(dist <= max_distance)[0])
    return found


@pytest.mark.parametrize("max_distance", [0, 3, 10, 15, 16, 30, 256])
def test_index_finds_exactly_the_all_pairs_answer(max_distance: int) -> None:
    """Both index kinds (multi-hash below 16 bits, flat from 16) on codes with twins at every distance."""
    rng = np.random.default_rng(max_distance)
    base = rng.integers(0, 256, (300, 32), dtype=np.uint8)
    twins = base[:150].copy()
    bits = np.unpackbits(twins, axis=1)
    for row, flips in enumerate(rng.integers(0, 40, 150)):
        bits[row, rng.choice(256, flips, replace=False)] ^= 1
    codes = np.ascontiguousarray(np.concatenate([base, np.packbits(bits, axis=1)]))
    i, j, dist = duplicates._near_pairs(codes, max_distance)
    assert set(zip(i.tolist(), j.tolist(), dist.tolist(), strict=True)) == _all_pairs(codes, max_distance)


@pytest.mark.skipif(not CHEST_XRAY.is_dir(), reason="shared chest_xray set not present")
def test_index_matches_all_pairs_on_the_real_chest_xray_set() -> None:
    hashed = duplicates.image_hashes(open_dataset(CHEST_XRAY).table)
    assert len(hashed) == 5216
    codes = duplicates._codes(hashed["phash"])
    for max_distance in (duplicates.DEFAULT_MAX_DISTANCE, 30):
        pairs = duplicates.find_duplicates(hashed, max_distance)
        index = {p: k for k, p in enumerate(hashed["path"])}
        got = {(index[a], index[b], d) for a, b, d in zip(pairs["path_a"], pairs["path_b"], pairs["distance"], strict=True)}
        got = {(min(a, b), max(a, b), d) for a, b, d in got}
        assert got == _all_pairs(codes, max_distance)
        assert len(got) > 0  # this set has real near-duplicates at both radii
