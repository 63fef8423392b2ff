"""Command line: `python -m core read FILE` and `python -m core scan SOURCE`.

Each prints a short human summary, or one JSON object with --json. Exit codes: 0 ok,
2 unreadable input (the message says why).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from core.dataset import class_counts, open_dataset, size_stats, skipped_summary
from core.errors import MedImageError
from core.image_reader import read_image


def _read(args: argparse.Namespace) -> dict[str, Any]:
    image = read_image(args.file, frame=args.frame)
    return {"file": args.file, **image.meta}


def _scan(args: argparse.Namespace) -> dict[str, Any]:
    def progress(done: int, total: int) -> None:
        if not args.json and sys.stderr.isatty():
            print(f"\rscanning {done}/{total}", end="", file=sys.stderr)

    ds = open_dataset(args.source, seed=args.seed, progress=progress)
    counts = class_counts(ds.table)
    return {
        "source": ds.source,
        "root": ds.root,
        "images": int(len(ds.table)),
        "classes": ds.classes,
        "split_from_source": ds.split_from_source,
        "counts": {label: row.to_dict() for label, row in counts.iterrows()},
        "sizes": size_stats(ds.table),
        "formats": ds.table["format"].value_counts().to_dict(),
        "channels": {str(k): int(v) for k, v in ds.table["channels"].value_counts().items()},
        "modes": ds.table["mode"].value_counts().to_dict(),
        "skipped": skipped_summary(ds.skipped),
    }


def _print_human(result: dict[str, Any]) -> None:
    for key, value in result.items():
        if isinstance(value, dict):
            print(f"{key}:")
            for k, v in value.items():
                print(f"  {k}: {v}")
        else:
            print(f"{key}: {value}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core", description="MedImage Studio core tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    read = sub.add_parser("read", help="read one image or DICOM file and print its facts")
    read.add_argument("file")
    read.add_argument("--frame", type=int, default=None, help="frame of a multi-frame file")
    read.add_argument("--json", action="store_true")
    read.set_defaults(run=_read)
    scan = sub.add_parser("scan", help="scan a dataset source (folder, CSV, zip or 'demo')")
    scan.add_argument("source")
    scan.add_argument("--seed", type=int, default=0, help="seed of the split, when the source has none")
    scan.add_argument("--json", action="store_true")
    scan.set_defaults(run=_scan)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = args.run(args)
    except MedImageError as exc:
        if args.json:
            print(json.dumps({"error": str(exc)}))
        else:
            print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, default=str))
    else:
        _print_human(result)
    return 0
