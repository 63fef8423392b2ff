"""Evaluation speed: core.evaluate.predict_table (tf.data, batched) vs the seeds' per-image model.predict.

Usage: python bench/predict_bench.py [SOURCE] [--limit 624] [--size 224] [--model smallnet]
(default SOURCE ../shared/data/chest_xray/train, else the demo set). Both read the same files and
run the same untrained model; the naive way is the seed's loop: load the image, resize, then
`model.predict(x[None])` per image. Prints images/s for both and the ratio (goal >= 10x), and the
peak memory after predicting N and then 4N images with predict_table (it streams: no growth).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "chest_xray" / "train"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", nargs="?", default=str(DEFAULT) if DEFAULT.exists() else "demo")
    parser.add_argument("--limit", type=int, default=624)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--model", default="smallnet")
    args = parser.parse_args()

    import numpy as np
    from PIL import Image

    from core.dataset import open_dataset
    from core.evaluate import predict_table
    from core.models import build_model
    from core.runs import create_run, write_status
    from core.train import make_config

    dataset = open_dataset(args.source)
    table = dataset.table.sample(min(args.limit, len(dataset.table)), random_state=0)
    config = make_config(args.source, args.model, image_size=args.size)
    run = create_run(config.to_dict(), Path(tempfile.mkdtemp(prefix="predict-bench-")))
    model = build_model(config.model)
    model.save(run / "best.keras")
    write_status(run, classes=dataset.classes)

    predict_table(run, table.head(32), "warmup")
    started = time.perf_counter()
    ours = predict_table(run, table, "bench")
    fast = time.perf_counter() - started
    peak_n = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    bigger = dataset.table.sample(min(4 * args.limit, len(dataset.table)), random_state=1)
    predict_table(run, bigger, "bench-4x")
    peak_4n = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    model.predict(np.zeros((1, args.size, args.size, 1), np.float32), verbose=0)  # warm up the naive way too
    started = time.perf_counter()
    naive = []
    for path in table["path"]:
        image = Image.open(path).convert("L").resize((args.size, args.size), Image.BILINEAR)
        x = np.asarray(image, np.float32)[None, :, :, None]
        naive.append(float(model.predict(x, verbose=0)[0, 0]))
    slow = time.perf_counter() - started

    n = len(table)
    agree = np.corrcoef(ours.iloc[:, 2].to_numpy(float), np.array(naive))[0, 1]
    print(f"{n} images at {args.size}px, {args.model}, {dataset.source}")
    print(f"batched predict_table:   {fast:6.2f} s  {n / fast:7.1f} images/s")
    print(f"per-image model.predict: {slow:6.2f} s  {n / slow:7.1f} images/s")
    print(f"ratio: {slow / fast:.1f}x (goal >= 10x); correlation of the two outputs {agree:.4f}")
    print(f"peak memory after {n} images: {peak_n:.0f} MB; after a {len(bigger)}-image run: {peak_4n:.0f} MB (streams: no growth with N)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
