"""Pretrained weight files: where they are looked up, what their official names are, and whether
they are the genuine files.

Keras downloads ImageNet weights into ~/.keras/models. Here a *weights folder* is searched first
(`MEDIMAGE_WEIGHTS_DIR`, several folders separated by ':', then the team's shared folder beside the
checkout, ../shared/data/imagenet-weights, when it exists, then ~/.keras/models), by the official
file name, so a machine without internet uses a copied file; only when none is found does Keras
download. A found file is described with its size and SHA-256 and marked verified when it equals
the hash Keras publishes for that name (in its applications' source).
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

KERAS_MODELS = Path("~/.keras/models").expanduser()
# Offline machines of the team keep genuine files here, so `python -m core train --recipe xray` works without setup.
SHARED_WEIGHTS = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-weights"

# The hashes Keras checks its downloads against: md5 (32 hex) or SHA-256 (64 hex), from
# keras/src/applications/*.py (MobileNet v1's SHA-256 table is in Keras' newer releases).
PUBLISHED_HASHES: dict[str, str] = {
    "vgg16_weights_tf_dim_ordering_tf_kernels.h5": "64373286793e3c8b2b4e3219cbf3544b",
    "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5": "6d6bbae143d832006294945121d1f1fc",
    "resnet50_weights_tf_dim_ordering_tf_kernels.h5": "2cb95161c43110f7111970584f804107",
    "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5": "4d473c1dd8becc155b73f8504c6f6626",
    "inception_v3_weights_tf_dim_ordering_tf_kernels.h5": "9a0d58056eeedaa3f26cb7ebd46da564",
    "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5": "bcbd6486424b2319ff4ef7d526e38f63",
    "densenet121_weights_tf_dim_ordering_tf_kernels.h5": "9d60b8095a5708f2dcce2bca79d332c7",
    "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5": "30ee3e1110167f948a6b9946edeeb738",
    "efficientnetb0.h5": "902e53a9f72be733fc0bcb005b3ebbac", "efficientnetb0_notop.h5": "50bc09e76180e00e4465e1a485ddc09d",
    "efficientnetb1.h5": "1d254153d4ab51201f1646940f018540", "efficientnetb1_notop.h5": "74c4e6b3e1f6a1eea24c589628592432",
    "efficientnetb2.h5": "b15cce36ff4dcbd00b6dd88e7857a6ad", "efficientnetb2_notop.h5": "111f8e2ac8aa800a7a99e3239f7bfb39",
    "efficientnetb3.h5": "ffd1fdc53d0ce67064dc6a9c7960ede0", "efficientnetb3_notop.h5": "af6d107764bb5b1abb91932881670226",
}
_MOBILENET_V1 = {  # "<alpha_text>_<rows>": (with top, without top), SHA-256
    "1_0_128": ("ef1480dcb7f11a75bc5187a74863b3b97c4cfed6b6dd5c78f003ba002a4d7fe6",
                "8fbb8332b956430de61ad4fa1ab261ab5b7922ef1d0f38c30056a485ec0d4ecb"),
    "1_0_160": ("a41aa0195ebe0a5301ab90af589155b42671f78704fd9a2e7dda919c478cd479",
                "22d25b67a8936869b5f0d0c840ba150c90dc89c0b07f8aacd387614be67845d2"),
    "1_0_192": ("bd7e7f6a7cd6690a10aedba3e93bec811240418bd9179546e50c0f4c35899a01",
                "d67556231564ded95aaa7a44004c73aa9696fba267a6817f430eee097af11782"),
    "1_0_224": ("006a2d9484fbea625dd4e6518652c101a3eca052671671c56265fc84f2e1181f",
                "9f9cfd8c925431c06ce96744e1d201575f6a681bf38ae2de38e2ae8f7d7829d3"),
    "7_5_128": ("cafcb7455c36187c93eb7fb3a68e29f76b5761cb2d946d57d1967578e3b05361",
                "dcc5aaa418bbf397a431e79a52be0ad1a61fb6364a9bb6d68b5258f13669c8ba"),
    "7_5_160": ("3ee6f1daa0f9da149bec3311eacfb4451ca236bc126dc25ee191f5bdc6e641be",
                "6056d87ad4e3b341cc8272d68b54a8a113ef0b0e5ab1399e4a801d2942a064fa"),
    "7_5_192": ("a7a2364ee404c19301edb827de693f46eeb46aad13e2c5e73494545e57749eef",
                "b8ea4352b99a87552c0b84c59b59d146b823b684766026ed8f0c68d3aab9e677"),
    "7_5_224": ("811e0307a7e8895a180b81c191033482d99470a0604ea8e88e8d947005067d84",
                "1da9019b66f05a0256dedfed0f321fcaf8bfa71f9facf3f9117e62820be39aa5"),
    "5_0_128": ("26752cdb9ab8459c85fb4cd0f45475bbd3bd25f9225b87bbedd474f5976da145",
                "7f9871530e19990a9a180626566fcc32fb487c70880306592cae219d67179635"),
    "5_0_160": ("71c742137645f19426ea3540bb2933310b0a5f2d3a2d09ee1aea91e348f6fba7",
                "7b15a4d22079138dd889a78cdea8d921a3b73cf7d313ff12f23634c4f71bcace"),
    "5_0_192": ("fabfe055bd26ea40c1c0798c4e22fe1eb437feab111be9f1f722360dff81e040",
                "b848a83f140e284973d80805dc4c184a0a885dadcc1700630a86879c9103d5b1"),
    "5_0_224": ("b4b134ed41de14fd8d6717ab4e88b53e3113194acae392bc41c012ba463906bb",
                "df860c59562f4c4af7a2fb2ae90731caef39fd5d03e5fcd6ca46988965f0a4b7"),
    "2_5_128": ("fe295db7f78635f1403127e3ba8cdc6237f83262bdb745063a67c1d81190c7f8",
                "7d8b7f3c9555cb4579f9659ee233a540e66fd7ad514c0a8b14493b667447c5d6"),
    "2_5_160": ("74b32700eb3f6fb8d0b3f416c3fb52ab5eca35dc82393341eb7bb52676b6b003",
                "c2f18432229c945b816f8b9f9cfa40d2964454b033efea804f6cd03942865bd4"),
    "2_5_192": ("22a302e8a39e545c7372ca96fe8698e3cbbc7d3906f60316e0617c15616f8894",
                "4b7370b9880577f12f31942049d19610a4559c8af38f39dc67d1f90ec9663aa1"),
    "2_5_224": ("98d047950e59f478af63681720906940efc8ce8cecb95bce5c7b47394f8bd63d",
                "dbdb03ee2a22fd895301636cd328b234bb3a9952358f436d82f46b81e0d5b0bf"),
}
for _key, (_top, _notop) in _MOBILENET_V1.items():
    PUBLISHED_HASHES[f"mobilenet_{_key}_tf.h5"] = _top
    PUBLISHED_HASHES[f"mobilenet_{_key}_tf_no_top.h5"] = _notop

MOBILENET_ALPHAS = (0.25, 0.5, 0.75, 1.0)
MOBILENET_V2_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)


def mobilenet_file(alpha: float, size: int, top: bool) -> str:
    """Keras' file name for MobileNet v1 ImageNet weights (sizes other than 128-224 load the 224 file)."""
    text = {1.0: "1_0", 0.75: "7_5", 0.5: "5_0", 0.25: "2_5"}[float(alpha)]
    rows = size if size in (128, 160, 192, 224) else 224
    return f"mobilenet_{text}_{rows}_tf{'' if top else '_no_top'}.h5"


def mobilenet_v2_file(alpha: float, size: int, top: bool) -> str:
    """Keras' file name for MobileNetV2 ImageNet weights (sizes other than 96-224 load the 224 file)."""
    rows = size if size in (96, 128, 160, 192, 224) else 224
    return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{rows}{'' if top else '_no_top'}.h5"


def weights_dirs() -> list[Path]:
    """Where weight files are looked up, in order: MEDIMAGE_WEIGHTS_DIR (':'-separated), the shared folder, Keras' cache."""
    extra = [Path(p).expanduser() for p in os.environ.get("MEDIMAGE_WEIGHTS_DIR", "").split(os.pathsep) if p.strip()]
    return [*extra, *([SHARED_WEIGHTS] if SHARED_WEIGHTS.is_dir() else []), KERAS_MODELS]


def find_weights(file_name: str) -> Path | None:
    """The first weights folder holding the official file name, or None."""
    for folder in weights_dirs():
        if (folder / file_name).is_file():
            return folder / file_name
    return None


def where_to_put(file_name: str) -> str:
    """The plain sentence for a missing file: its name and the folders searched."""
    folders = ", ".join(str(f) for f in weights_dirs())
    return (f"Put '{file_name}' into one of: {folders} (set MEDIMAGE_WEIGHTS_DIR to add a folder), "
            "or choose the file as a local weights file.")


@dataclass(frozen=True)
class WeightsInfo:
    path: str
    name: str
    size_bytes: int
    sha256: str
    published: str | None  # the hash Keras publishes for this file name, if any
    verified: bool  # the file's hash equals the published one

    @property
    def label(self) -> str:
        state = "verified against Keras' published hash" if self.verified else (
            "HASH MISMATCH with Keras' published hash" if self.published else "no published hash to check")
        return f"{self.name} · {self.size_bytes / 1e6:.1f} MB · sha256 {self.sha256[:12]} · {state}"


@functools.lru_cache(maxsize=64)
def _hashes(path: str, size: int, mtime: float) -> tuple[str, str]:
    sha, md5 = hashlib.sha256(), hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            sha.update(chunk)
            md5.update(chunk)
    return sha.hexdigest(), md5.hexdigest()


def describe(path: str | Path, official_name: str | None = None) -> WeightsInfo:
    """Name, size, SHA-256 and verification of a weights file (hashes cached by path, size and mtime)."""
    path = Path(path)
    stat = path.stat()
    sha, md5 = _hashes(str(path), stat.st_size, stat.st_mtime)
    published = PUBLISHED_HASHES.get(official_name or path.name)
    verified = published is not None and published in (sha, md5)
    return WeightsInfo(str(path), path.name, stat.st_size, sha, published, verified)


def available() -> list[WeightsInfo]:
    """Every .h5 weights file in the weights folders (first folder wins for a name), described."""
    seen: dict[str, Path] = {}
    for folder in weights_dirs():
        if folder.is_dir():
            for path in sorted(folder.glob("*.h5")):
                seen.setdefault(path.name, path)
    return [describe(path) for path in seen.values()]
