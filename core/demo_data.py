"""The built-in demo set: synthetic chest-X-ray-like phantoms, generated offline and deterministically.

NORMAL: a torso with two dark lung fields, spine, ribs, heart shadow and faint vessel markings.
PNEUMONIA: the same anatomy plus patchy, blurred opacities inside one or both lungs.
Every image varies in patient size, position, tilt, exposure, blur and noise, so a classifier must
look at the lungs rather than at a global brightness cue. Generating all images takes a few seconds.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np

from core.atomic import write_text
from core.paths import data_dir

DEMO_VERSION = "2"
CLASSES = ("NORMAL", "PNEUMONIA")
IMAGES_PER_CLASS = 150
SIZE = 256


def _ellipse(img: np.ndarray, center, axes, angle: float, value: float) -> None:
    cv2.ellipse(img, (int(center[0]), int(center[1])), (int(axes[0]), int(axes[1])), angle, 0, 360, value, -1)


def _lung_masks(rng: np.random.Generator, size: int) -> tuple[np.ndarray, list[tuple]]:
    """Two lung-field masks (left, right) with a little asymmetry, plus their geometry."""
    cx, cy = size / 2 + rng.normal(0, size * 0.02), size * (0.47 + rng.normal(0, 0.02))
    gap = size * rng.uniform(0.09, 0.13)
    ax, ay = size * rng.uniform(0.13, 0.17), size * rng.uniform(0.25, 0.31)
    mask = np.zeros((size, size), np.float32)
    geometry = []
    for side in (-1, 1):
        center = (cx + side * (gap + ax), cy)
        axes = (ax * rng.uniform(0.92, 1.08), ay * rng.uniform(0.92, 1.08))
        _ellipse(mask, center, axes, side * rng.uniform(2, 10), 1.0)
        geometry.append((center, axes))
    return mask, geometry


def make_phantom(rng: np.random.Generator, pneumonia: bool, size: int = SIZE) -> np.ndarray:
    """One uint8 grayscale phantom (size x size)."""
    img = np.full((size, size), 0.08, np.float32)
    # Torso (soft tissue) and shoulders.
    _ellipse(img, (size / 2, size * 0.55), (size * rng.uniform(0.38, 0.46), size * 0.55), 0, 0.55)
    lungs, geometry = _lung_masks(rng, size)
    img = img * (1 - lungs) + lungs * rng.uniform(0.18, 0.26)
    # Vessel markings: faint branching streaks inside the lungs (present in both classes).
    streaks = np.zeros_like(img)
    for (center, axes) in geometry:
        for _ in range(rng.integers(6, 12)):
            angle = rng.uniform(0, 2 * np.pi)
            length = rng.uniform(0.3, 0.9) * axes[1]
            start = (int(center[0]), int(center[1] - axes[1] * 0.1))
            end = (int(start[0] + np.cos(angle) * length * 0.6), int(start[1] + np.sin(angle) * length))
            cv2.line(streaks, start, end, 0.06, 1)
    img += cv2.GaussianBlur(streaks, (0, 0), 1.2) * lungs
    # Ribs: bright arcs across the chest.
    ribs = np.zeros_like(img)
    top = size * 0.2
    for k in range(rng.integers(8, 11)):
        y = top + k * size * rng.uniform(0.055, 0.065)
        cv2.ellipse(ribs, (int(size / 2), int(y - size * 0.05)), (int(size * 0.36), int(size * 0.09)), 0, 10, 170, 0.12, 2)
    img += cv2.GaussianBlur(ribs, (0, 0), 1.5)
    # Spine and heart shadow (heart sits left of centre in the image, over the left lung).
    cv2.rectangle(img, (int(size * 0.47), 0), (int(size * 0.53), size), 0.62, -1)
    heart_c = (size * rng.uniform(0.53, 0.58), size * rng.uniform(0.58, 0.64))
    _ellipse(img, heart_c, (size * rng.uniform(0.11, 0.15), size * rng.uniform(0.12, 0.15)), 20, 0.5)
    if pneumonia:
        opac = np.zeros_like(img)
        sides = [0, 1] if rng.random() < 0.4 else [int(rng.integers(0, 2))]
        for s in sides:
            (center, axes) = geometry[s]
            for _ in range(rng.integers(3, 8)):
                px = center[0] + rng.uniform(-0.7, 0.7) * axes[0]
                py = center[1] + rng.uniform(-0.2, 0.85) * axes[1]
                r = size * rng.uniform(0.035, 0.07)
                _ellipse(opac, (px, py), (r * rng.uniform(0.8, 1.6), r), rng.uniform(0, 180), rng.uniform(0.25, 0.45))
        opac = cv2.GaussianBlur(opac, (0, 0), size * 0.015) * lungs
        img += opac
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.6, 1.6))
    # Geometry and exposure vary between "scanners".
    m = cv2.getRotationMatrix2D((size / 2, size / 2), rng.normal(0, 3), rng.uniform(0.92, 1.05))
    m[:, 2] += rng.normal(0, size * 0.02, 2)
    img = cv2.warpAffine(img, m, (size, size), borderMode=cv2.BORDER_CONSTANT, borderValue=0.08)
    img = np.clip(img, 0, 1) ** rng.uniform(0.8, 1.25) * rng.uniform(0.85, 1.1) + rng.uniform(-0.04, 0.05)
    img += rng.normal(0, rng.uniform(0.01, 0.03), img.shape)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def generate(folder: Path, images_per_class: int = IMAGES_PER_CLASS, seed: int = 0, size: int = SIZE) -> Path:
    """Write the demo set as class folders of PNGs into `folder` (replaced atomically)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    try:
        for label_index, label in enumerate(CLASSES):
            (tmp / label).mkdir()
            for i in range(images_per_class):
                rng = np.random.default_rng([seed, label_index, i])
                img = make_phantom(rng, pneumonia=label == "PNEUMONIA", size=size)
                cv2.imwrite(str(tmp / label / f"{label.lower()}_{i:04d}.png"), img)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
        write_text(_marker(folder), DEMO_VERSION)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def _marker(folder: Path) -> Path:
    """Beside the folder, not in it, so it never shows up as a skipped file."""
    return folder.parent / f".{folder.name}-version"


def demo_folder() -> Path:
    """The demo set's folder, generated on first use (or when the generator changed)."""
    folder = data_dir() / "demo"
    marker = _marker(folder)

    def current() -> bool:
        return folder.is_dir() and marker.is_file() and marker.read_text().strip() == DEMO_VERSION

    if not current():
        # one generator at a time: the workers of a multi-worker job all open the demo set at once,
        # and one replacing the folder while another lists it gave them different datasets
        with open(folder.parent / ".demo.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not current():
                generate(folder)
    return folder
