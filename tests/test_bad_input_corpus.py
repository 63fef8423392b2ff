"""The bad-input corpus (issue 8): every case must either work or raise one MedImageError with a message.

Images and DICOMs go through `read_image` (what every page and the pipeline use), dataset sources
through `open_dataset`, model files through `load_model_file` + `from_model` (the Predict page's
path). Anything else escaping is a bug. The counts are printed with the test run.
"""

from __future__ import annotations

import io
import os
import struct
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import pydicom
import pytest
from PIL import Image

from core.dataset import open_dataset
from core.errors import MedImageError
from core.image_reader import read_image
from core.predict import from_model, load_model_file
from tests.conftest import zip_bytes

Case = tuple[str, str, Callable[[Path], object]]  # (kind, name, run(tmp) -> anything)


def _encode(array: np.ndarray | Image.Image, fmt: str, **kw) -> bytes:
    image = array if isinstance(array, Image.Image) else Image.fromarray(array)
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _png_header(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR claiming a size, with one tiny IDAT: a decompression-bomb header."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))  # noqa: E731
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b"")


def _image_bytes() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (40, 30), dtype=np.uint8)
    rgb = rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)
    png, jpeg = _encode(gray, "PNG"), _encode(rgb, "JPEG")
    frames = [Image.fromarray(np.full((20, 20), v, np.uint8)) for v in (0, 120, 240)]
    gif, tiff = io.BytesIO(), io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:])
    frames[0].save(tiff, format="TIFF", save_all=True, append_images=frames[1:])
    exif = Image.Exif()
    exif[0x0112] = 6
    cases = {
        "zero-byte.png": b"",
        "text-as.png": b"hello, this is not an image\n",
        "text-as.jpg": b"GIF89a but not really",
        "png-as.jpg": png,
        "jpeg-as.png": jpeg,
        "truncated.png": png[: len(png) // 2],
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "header-only.png": png[:40],
        "header-only.jpg": jpeg[:200],
        "garbage-middle.png": png[:60] + b"\0" * 200 + png[260:],
        "garbage-middle.jpg": jpeg[:300] + os.urandom(400) + jpeg[700:],
        "random-bytes.bin": os.urandom(4096),
        "16bit.png": _encode(Image.fromarray((rng.integers(0, 65535, (30, 30))).astype(np.uint16)), "PNG"),
        "16bit-flat.png": _encode(Image.fromarray(np.full((8, 8), 4000, np.uint16)), "PNG"),
        "rgba.png": _encode(np.dstack([rgb, np.full((40, 30), 128, np.uint8)]), "PNG"),
        "la.png": _encode(Image.fromarray(gray).convert("LA"), "PNG"),
        "palette.png": _encode(Image.fromarray(rgb).convert("P"), "PNG"),
        "palette-transparency.png": _encode(Image.fromarray(rgb).convert("P"), "PNG", transparency=0),
        "cmyk.jpg": _encode(Image.fromarray(rgb).convert("CMYK"), "JPEG"),
        "1bit.png": _encode(Image.fromarray(gray > 128), "PNG"),
        "1x1.png": _encode(np.zeros((1, 1), np.uint8), "PNG"),
        "1x1.jpg": _encode(np.zeros((1, 1, 3), np.uint8), "JPEG"),
        "1xN.png": _encode(np.zeros((1, 500), np.uint8), "PNG"),
        "huge-header.png": _png_header(40000, 40000),
        "huge-header-wide.png": _png_header(200000, 10),
        "zero-size-header.png": _png_header(0, 0),
        "animated.gif": gif.getvalue(),
        "multiframe.tiff": tiff.getvalue(),
        "float.tiff": _encode(Image.fromarray(rng.random((10, 10)).astype(np.float32)), "TIFF"),
        "int32.tiff": _encode(Image.fromarray(rng.integers(0, 1 << 20, (10, 10)).astype(np.int32)), "TIFF"),
        "i16.tiff": _encode(Image.fromarray(rng.integers(0, 65535, (10, 10)).astype(np.uint16)), "TIFF"),
        "rgb.tiff": _encode(rgb, "TIFF"),
        "lzw.tiff": _encode(rgb, "TIFF", compression="tiff_lzw"),
        "bmp.bmp": _encode(rgb, "BMP"),
        "gray.bmp": _encode(gray, "BMP"),
        "webp.webp": _encode(rgb, "WEBP"),
        "lossless.webp": _encode(rgb, "WEBP", lossless=True),
        "exif-rotated.jpg": _encode(Image.fromarray(rgb), "JPEG", exif=exif),
        "progressive.jpg": _encode(rgb, "JPEG", progressive=True),
        "gray.jpg": _encode(gray, "JPEG"),
        "ico.ico": _encode(rgb, "ICO"),
        "ppm.ppm": _encode(rgb, "PPM"),
        "tga.tga": _encode(rgb, "TGA"),
        "pdf-bytes.pdf": b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF",
        "svg.svg": b"<svg xmlns='http://www.w3.org/2000/svg' width='10' height='10'/>",
        "html.png": b"<html><body>hi</body></html>",
        "zip-as.png": zip_bytes({"a.png": png}),
        "dicom-preamble-only.dcm": b"\0" * 128 + b"DICM",
        "dicom-truncated.dcm": Path(pydicom.data.get_testdata_file("CT_small.dcm")).read_bytes()[:2000],
        "dicom-as.png": Path(pydicom.data.get_testdata_file("CT_small.dcm")).read_bytes(),
        "utf16-text.png": "not an image".encode("utf-16"),
        "null-bytes.jpg": b"\0" * 5000,
        "jpeg-soi-only.jpg": b"\xff\xd8\xff",
        "png-signature-only.png": b"\x89PNG\r\n\x1a\n",
    }
    return cases


def _dataset_cases() -> list[tuple[str, Callable[[Path], object]]]:
    png = _encode(np.full((12, 12), 90, np.uint8), "PNG")

    def folder(layout: dict[str, bytes]) -> Callable[[Path], object]:
        def run(tmp: Path) -> object:
            root = tmp / "ds"
            for rel, data in layout.items():
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                (root / rel).write_bytes(data)
            root.mkdir(exist_ok=True)
            return open_dataset(str(root))

        return run

    base_rows = "".join(f"g{c}{i}.png,{c}\n" for c in ("a", "b") for i in range(3))
    base_files = {f"g{c}{i}.png": png for c in ("a", "b") for i in range(3)}

    def csv(text: str, files: dict[str, bytes] | None = None, with_good_rows: bool = True) -> Callable[[Path], object]:
        """A CSV whose bad rows sit among three good images per class (so the bad rows, not the size, decide)."""
        if with_good_rows and text.startswith("path,label\n"):
            text, files = text + base_rows, {**base_files, **(files or {})}

        def run(tmp: Path) -> object:
            for rel, data in (files or {}).items():
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                (tmp / rel).write_bytes(data)
            (tmp / "labels.csv").write_text(text)
            return open_dataset(str(tmp / "labels.csv"))

        return run

    def zipped(data: bytes) -> Callable[[Path], object]:
        return lambda tmp: open_dataset(data)

    good = {f"{c}/{c}{i}.png": png for c in ("a", "b") for i in range(4)}
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a/bomb.png", b"\0" * (200 * 1024 * 1024))
    return [
        ("empty folder", folder({})),
        ("only junk files", folder({"a/readme.txt": b"x", "b/notes.md": b"y"})),
        ("one class", folder({f"a/{i}.png": png for i in range(5)})),
        ("unreadable images", folder({**good, "a/bad.png": b"nope"})),
        ("all images unreadable", folder({"a/1.png": b"x", "b/2.png": b"y"})),
        ("hidden files only", folder({"a/.x.png": png, "b/.y.png": png})),
        ("nested wrapper", folder({f"wrap/{k}": v for k, v in good.items()})),
        ("split folders", folder({f"train/{k}": v for k, v in good.items()})),
        ("deep nesting", folder({f"a/1/2/3/4/{i}.png": png for i in range(3)} | {"b/x.png": png})),
        ("missing path", lambda tmp: open_dataset(str(tmp / "nowhere"))),
        ("a file not a folder", lambda tmp: open_dataset(__file__)),
        ("csv missing columns", csv("name,value\nx.png,1\n", {"x.png": png})),
        ("csv empty", csv("")),
        ("csv header only", csv("path,label\n", with_good_rows=False)),
        ("csv absolute paths", csv("path,label\n/etc/passwd,a\n/etc/hosts,b\n")),
        ("csv outside its folder", csv("path,label\n../../etc/passwd,a\n../x.png,b\n")),
        ("csv missing files", csv("path,label\nnope1.png,a\nnope2.png,b\n")),
        ("csv duplicate rows", csv("path,label\nx.png,a\nx.png,a\ny.png,b\ny.png,b\n", {"x.png": png, "y.png": png})),
        ("csv conflicting labels", csv("path,label\nx.png,a\nx.png,b\ny.png,b\n", {"x.png": png, "y.png": png})),
        ("csv empty labels", csv("path,label\nx.png,\ny.png,b\n", {"x.png": png, "y.png": png})),
        (
            "csv unknown split",
            csv("path,label,split\nx.png,a,sometimes\ny.png,b,train\nz.png,a,train\n", {"x.png": png, "y.png": png, "z.png": png}),
        ),
        ("csv not utf8", lambda tmp: ((tmp / "l.csv").write_bytes(b"path,label\n\xff\xfe.png,a\n"), open_dataset(str(tmp / "l.csv")))),
        ("csv binary garbage", lambda tmp: ((tmp / "l.csv").write_bytes(os.urandom(3000)), open_dataset(str(tmp / "l.csv")))),
        ("csv semicolons", csv("path;label\nx.png;a\n", {"x.png": png})),
        ("csv unreadable image", csv("path,label\nx.png,a\ny.png,b\n", {"x.png": b"no", "y.png": png})),
        ("zip with ..", zipped(zip_bytes({"../evil.png": png, **good}))),
        ("zip with absolute paths", zipped(zip_bytes({"/tmp/evil.png": png, **good}))),
        ("zip with symlinks", zipped(zip_bytes(good, symlinks=("a/link.png",)))),
        ("zip bomb", zipped(bomb.getvalue())),
        ("zip not a zip", zipped(b"PK\x03\x04 definitely broken")),
        ("zip empty", zipped(zip_bytes({}))),
        ("zip no images", zipped(zip_bytes({"a/readme.txt": b"x"}))),
        ("zip one class", zipped(zip_bytes({"a/1.png": png, "a/2.png": png}))),
        ("zip truncated", zipped(zip_bytes(good)[:300])),
        ("zip good", zipped(zip_bytes(good))),
        ("zip windows drive path", zipped(zip_bytes({"C:/evil.png": png, **good}))),
        ("zip backslashes", zipped(zip_bytes({"a\\..\\..\\evil.png": png, **good}))),
    ]


def _model_cases() -> list[tuple[str, Callable[[Path], object]]]:
    def save(model: keras.Model, tmp: Path) -> bytes:
        model.save(tmp / "m.keras")
        return (tmp / "m.keras").read_bytes()

    def lambda_model(tmp: Path) -> object:
        inputs = keras.Input((8, 8, 1))
        return from_model(load_model_file(save(keras.Model(inputs, keras.layers.Lambda(lambda x: x + 1)(inputs)), tmp), "lambda.keras"))

    def good_model(tmp: Path) -> keras.Model:
        inputs = keras.Input((16, 16, 1))
        return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(keras.layers.GlobalAveragePooling2D()(inputs)))

    def corrupted(tmp: Path) -> object:
        data = bytearray(save(good_model(tmp), tmp))
        data[200:800] = os.urandom(600)
        return from_model(load_model_file(bytes(data), "corrupt.keras"))

    def flat_input(tmp: Path) -> object:
        inputs = keras.Input((10,))
        return from_model(load_model_file(save(keras.Model(inputs, keras.layers.Dense(1)(inputs)), tmp), "flat.keras"))

    def five_channels(tmp: Path) -> object:
        inputs = keras.Input((16, 16, 5))
        model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(keras.layers.GlobalAveragePooling2D()(inputs)))
        return from_model(load_model_file(save(model, tmp), "five.keras"))

    def mismatched_classes(tmp: Path) -> object:
        inputs = keras.Input((16, 16, 3))
        model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(keras.layers.GlobalAveragePooling2D()(inputs)))
        return from_model(load_model_file(save(model, tmp), "four.keras"), ["a", "b"])

    return [
        ("lambda layer", lambda_model),
        ("corrupted .keras", corrupted),
        ("pickle bytes", lambda tmp: load_model_file(b"\x80\x04\x95", "model.pkl")),
        ("h5 bytes", lambda tmp: load_model_file(b"\x89HDF\r\n\x1a\n" + b"\0" * 100, "model.h5")),
        ("empty file", lambda tmp: load_model_file(b"", "e.keras")),
        ("zip without a model", lambda tmp: load_model_file(zip_bytes({"x.txt": b"hi"}), "x.keras")),
        ("flat input model", flat_input),
        ("five-channel model", five_channels),
        ("class names mismatch", mismatched_classes),
        ("good model", lambda tmp: from_model(load_model_file(save(good_model(tmp), tmp), "good.keras"))),
    ]


def _cases() -> list[Case]:
    cases: list[Case] = [("pydicom", Path(p).name, lambda tmp, p=p: read_image(p)) for p in pydicom.data.get_testdata_files()]
    cases += [("image", name, lambda tmp, d=data: read_image(d)) for name, data in _image_bytes().items()]
    cases += [
        ("image-file", name, lambda tmp, n=name, d=data: ((tmp / n).write_bytes(d), read_image(tmp / n)))
        for name, data in list(_image_bytes().items())[:20]
    ]
    cases += [("dataset", name, fn) for name, fn in _dataset_cases()]
    cases += [("model", name, fn) for name, fn in _model_cases()]
    return cases


def test_bad_input_corpus(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    outcomes: Counter[str] = Counter()
    crashes = []
    for i, (kind, name, run) in enumerate(_cases()):
        folder = tmp_path / str(i)
        folder.mkdir()
        try:
            run(folder)
            outcomes[(kind, "works")] += 1
        except MedImageError as exc:
            assert str(exc).strip(), f"{kind}/{name}: empty message"
            outcomes[(kind, "clear message")] += 1
        except Exception as exc:  # noqa: BLE001 - exactly what this test hunts for
            crashes.append(f"{kind}/{name}: {type(exc).__name__}: {exc}")
    total = sum(outcomes.values()) + len(crashes)
    with capsys.disabled():
        print(f"\nbad-input corpus: {total} cases")
        for kind in dict.fromkeys(k for k, _ in outcomes):
            print(f"  {kind:11s} works {outcomes[(kind, 'works')]:4d} · clear message {outcomes[(kind, 'clear message')]:4d}")
        print(f"  crashes {len(crashes)}")
    assert not crashes, "\n".join(crashes)
    assert total >= 150
