"""What the machine offers for training: TensorFlow/Keras versions, CPUs, GPUs."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

# CPU instructions that do bfloat16 arithmetic natively (AVX-512 BF16 on Zen 4 / Cooper Lake, AMX on Sapphire Rapids)
_BF16_FLAGS = {"avx512_bf16", "amx_bf16"}


def cpu_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU computes in bfloat16 natively: there oneDNN's bfloat16 convolutions beat float32
    (a SmallNet epoch at 224 px 2.8x, bench/pipeline_bench.py); elsewhere bfloat16 is emulated and slower. Linux only."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return False
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return bool(_BF16_FLAGS & set(line.split(":", 1)[-1].split()))
    return False


def precision_policy(gpus: list[dict[str, Any]], bf16_cpu: bool, model: str | None = None) -> str:
    """The Keras dtype policy training uses on "auto": float16 compute on GPUs with tensor cores
    (compute capability 7.0+), bfloat16 on a CPU-only machine whose CPU has native bfloat16, else float32.
    Variables and the output layer stay float32 either way.

    On such a CPU a network of depthwise convolutions (MobileNets, EfficientNets) stays float32: TensorFlow computes
    those slower in bfloat16 than in float32 there (bench/precision_bench.py: a MobileNetV2 training step 0.60x, an
    EfficientNetB0 step 0.82x, against ResNet50 1.72x and SmallNet 1.77x), so bfloat16 would cost both time and
    precision. `model` is the catalog name of the network to train; None: the machine's default for other networks."""
    from core.catalog import BACKBONES

    if gpus:
        return "mixed_float16" if any((g["compute_capability"] or (0, 0)) >= (7, 0) for g in gpus) else "float32"
    if not bf16_cpu or (model in BACKBONES and BACKBONES[model].depthwise):
        return "float32"
    return "mixed_bfloat16"


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def nvidia_gpus() -> list[str]:
    """The GPU names the NVIDIA driver reports (nvidia-smi), without starting TensorFlow; [] when none."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        out = subprocess.run([smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


def quick_summary() -> dict[str, Any]:
    """What the sidebar shows, in milliseconds: versions from the installed packages' metadata and the GPUs
    the driver reports. Importing TensorFlow to ask it costs ~4 s, which every first page load would wait for;
    the Train page, which needs TensorFlow anyway, shows TensorFlow's own view (device_summary)."""
    gpus = nvidia_gpus()
    cuda = any(_version(d) != "not installed" for d in ("nvidia-cudnn-cu12", "nvidia-cudnn-cu13"))
    if gpus and cuda:
        device = f"GPU ({gpus[0]})"
    elif gpus:
        device = f"CPU only: {gpus[0]} found, but TensorFlow's CUDA libraries are not installed (see README)"
    else:
        device = "CPU only"
    return {
        "tensorflow": _version("tensorflow"),
        "keras": _version("keras"),
        "python": platform.python_version(),
        "cpus": os.cpu_count() or 1,
        "device": device,
        "cpu_bf16": cpu_bf16(),
    }


def device_summary() -> dict[str, Any]:
    """Versions and devices; imports TensorFlow (slow the first time), so callers cache it."""
    import keras
    import tensorflow as tf

    gpus = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        gpus.append({"name": details.get("device_name", gpu.name), "compute_capability": details.get("compute_capability")})
    return {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count() or 1,
        "gpus": gpus,
        "device": f"GPU ({gpus[0]['name']})" if gpus else "CPU only",
        "cpu_bf16": cpu_bf16(),  # the precision a job uses depends on the network too: train.precision_for
    }
