"""Export formats side by side: file size and single-image CPU latency (issue 14).

Exports RUN (default: a SmallNet trained for 2 epochs on the demo set, with `--intensity` as the scratch recipes can
set it: `equalize` adds the in-model histogram equalisation, whose sort is the costliest op TFLite runs for it) to
.keras, SavedModel and TFLite (float32, float16, int8), then times one image at a time, p50 / p95 over N calls after a
warm-up, against the naive way: Keras `model.predict(x[None])` per image.

    python bench/export_bench.py [RUN] [--calls 100] [--intensity rescale|standardize|equalize]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def timed(fn, calls: int) -> tuple[float, float]:
    for _ in range(5):
        fn()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[int(0.95 * (len(times) - 1))]


def demo_run(folder: Path, intensity: str) -> Path:
    from core.runs import create_run
    from core.train import make_config, run_job

    config = make_config("demo", "smallnet", image_size=128, epochs=2, tensorboard=False, intensity=intensity)
    run = create_run(config.to_dict(), folder)
    run_job(run, verbose=0)
    return run


def main() -> None:
    from core.catalog import INTENSITY

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", default=None)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--intensity", choices=INTENSITY, default="rescale", help="the demo run's per-image intensity (ignored with RUN)")
    args = parser.parse_args()
    import keras
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    from core.errors import MedImageError
    from core.export import check_images, export_run, float32_model

    work = Path(tempfile.mkdtemp(prefix="export-bench-"))
    run = Path(args.run) if args.run else demo_run(work / "runs", args.intensity)
    image = check_images(run, 1)
    model = float32_model(run)
    rows = [("Keras model.predict(x[None]) per image (naive)", None, lambda: model.predict(image, verbose=0))]
    rows.append(("Keras model(x) (direct call)", None, lambda: model(image, training=False)))
    refused: list[str] = []
    for fmt, quantize in (("keras", None), ("savedmodel", None), ("tflite", None), ("tflite", "float16"), ("tflite", "int8")):
        label = f"{fmt}{' ' + quantize if quantize else ''}"
        try:
            result = export_run(run, work / f"{fmt}-{quantize or 'float32'}", fmt, quantize)
        except MedImageError as exc:  # the export's own check refused it: report, do not time
            refused.append(f"{label}: {exc}")
            continue
        path = Path(result.path)
        if fmt == "keras":
            loaded = keras.saving.load_model(path, safe_mode=True, compile=False)
            fn = lambda m=loaded: m(image, training=False)  # noqa: E731
        elif fmt == "savedmodel":
            serve = tf.saved_model.load(str(path)).signatures["serving_default"]
            x = tf.constant(image)
            fn = lambda s=serve, x=x: s(x)  # noqa: E731
        else:
            interpreter = Interpreter(model_path=str(path), num_threads=2)
            interpreter.allocate_tensors()
            inp, out = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]

            def fn(i=interpreter, inp=inp, out=out):
                i.set_tensor(inp, image)
                i.invoke()
                return i.get_tensor(out)
        rows.append((f"{label}: {path.name} ({result.size_bytes / 1e6:.2f} MB, max diff {result.max_abs_diff:.1e})", result.size_bytes, fn))
    print(f"run {run.name} (input {image.shape[1]} px, {image.shape[-1]} channel(s)), {args.calls} calls each")
    base = None
    print("| format | size | p50 ms | p95 ms | vs naive |\n| --- | --- | --- | --- | --- |")
    for label, size, fn in rows:
        p50, p95 = timed(fn, args.calls)
        base = base or p50
        print(f"| {label} | {'' if size is None else f'{size / 1e6:.2f} MB'} | {p50:.2f} | {p95:.2f} | {base / p50:.1f}x |")
    for line in refused:
        print(f"refused by the export check: {line}")


if __name__ == "__main__":
    main()
