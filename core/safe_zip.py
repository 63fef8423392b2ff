"""Extract an uploaded zip without trusting it.

Members with absolute paths, `..`, or symlinks are skipped and reported; archives over the file
count, size or compression-ratio caps are refused whole (zip bombs), and the byte cap is enforced
on what is actually decompressed, not on what the header claims.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from core.errors import DatasetError

MAX_FILES = 100_000
MAX_BYTES = 8 * 1024**3
MAX_RATIO = 100.0  # uncompressed / compressed for the whole archive; JPEG/PNG data is ~1
_RATIO_FLOOR_BYTES = 64 * 1024**2  # small archives of blank images may compress well: allow those
_CHUNK = 1024 * 1024


@dataclass
class ZipExtraction:
    folder: Path
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _unsafe_reason(info: zipfile.ZipInfo) -> str | None:
    name = info.filename.replace("\\", "/")
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "symbolic link in zip (not extracted)"
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "absolute path in zip (not extracted)"
    if ".." in PurePosixPath(name).parts:
        return "path with '..' in zip (not extracted)"
    return None


def _check_caps(infos: list[zipfile.ZipInfo], max_files: int, max_bytes: int, max_ratio: float) -> None:
    files = [i for i in infos if not i.is_dir()]
    if len(files) > max_files:
        raise DatasetError(f"The zip holds {len(files):,} files, over the {max_files:,} file cap. Split it.")
    declared = sum(i.file_size for i in files)
    packed = sum(i.compress_size for i in files) or 1
    if declared > max_bytes:
        raise DatasetError(
            f"The zip would expand to {declared / 1e9:.1f} GB, over the {max_bytes / 1e9:.1f} GB cap."
        )
    if declared > _RATIO_FLOOR_BYTES and declared / packed > max_ratio:
        raise DatasetError(
            f"The zip expands {declared / packed:.0f}x (cap {max_ratio:.0f}x): that is a zip bomb, "
            "not a set of images. It was not extracted."
        )


def extract_zip(
    source: str | os.PathLike | bytes,
    dest_root: Path,
    max_files: int = MAX_FILES,
    max_bytes: int = MAX_BYTES,
    max_ratio: float = MAX_RATIO,
) -> ZipExtraction:
    """Extract into dest_root/<content hash>/ (reused when the same zip comes again)."""
    data = bytes(source) if isinstance(source, (bytes, bytearray)) else None
    if data is not None:
        digest = hashlib.sha256(data).hexdigest()[:16]
    else:  # stream a zip on disk: it may be gigabytes
        with open(source, "rb") as fh:
            digest = hashlib.file_digest(fh, "sha256").hexdigest()[:16]
    target = dest_root / f"zip-{digest}"
    try:
        archive = zipfile.ZipFile(io.BytesIO(data) if data is not None else source)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise DatasetError(f"This is not a readable zip file ({exc}). Re-create the archive.") from exc
    with archive:
        infos = archive.infolist()
        _check_caps(infos, max_files, max_bytes, max_ratio)
        skipped = [(i.filename, r) for i in infos if (r := _unsafe_reason(i))]
        if target.is_dir():
            return ZipExtraction(target, skipped)
        dest_root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=dest_root, prefix=".zip-"))
        written = 0
        try:
            for info in infos:
                if info.is_dir() or _unsafe_reason(info):
                    continue
                out = tmp / PurePosixPath(info.filename.replace("\\", "/"))
                out.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as src, open(out, "wb") as dst:
                    while chunk := src.read(_CHUNK):
                        written += len(chunk)
                        if written > max_bytes:
                            raise DatasetError(
                                f"The zip expanded past the {max_bytes / 1e9:.1f} GB cap while extracting "
                                "(its header under-states its size). It was not extracted."
                            )
                        dst.write(chunk)
            try:
                os.replace(tmp, target)
            except OSError:
                if not target.is_dir():  # a concurrent extraction of the same zip won the race: fine
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
        except DatasetError:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, NotImplementedError) as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise DatasetError(f"The zip could not be extracted ({exc}); it may be damaged or encrypted.") from exc
    return ZipExtraction(target, skipped)
