"""Page reruns: the pages' kept compiled model vs Streamlit's default clear after every run.

Usage: python bench/rerun_bench.py [--models DIR] [--run NAME] [--reruns 6]
(default DIR: MEDIMAGE_MODELS_DIR or models/; default run: the one the page preselects, the newest
completed). The page is run in-process with Streamlit's AppTest: three images are uploaded, then
the chosen image changes back and forth, each change a rerun that predicts (with mirror TTA) and draws
Grad-CAM for the new image; then the Lab's augmentation preview, whose reruns build Keras layers and
hold no model. Streamlit's default: after every run it calls `keras.backend.clear_session()`
(`script_runner._clean_problem_modules`), which drops TensorFlow's compiled functions, so each rerun
re-optimises the model's graph. The pages replace that hook (pages/common.py): they clear when they
load a model, and the hook every 100th run. Both arms run on the same page, model and images, in this
one process. Prints the seconds per rerun (median) of each and the ratio.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _png(path: str) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.open(path).save(buffer, format="PNG")
    return buffer.getvalue()


def _time_reruns(page: str, clean, setup, change, count: int) -> list[float]:
    """Seconds of each of `count` reruns of a fresh `page`, each made by `change(at, i)`, with `clean` (None: the
    pages' own) as Streamlit's after-run hook; `setup(at)` runs once before them."""
    from streamlit.runtime.scriptrunner import script_runner
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600).run()
    at.switch_page(page).run()
    if clean is not None:  # after the pages' own import, which installs theirs
        script_runner._clean_problem_modules = clean
    setup(at)
    times = []
    for i in range(count):
        start = time.perf_counter()
        change(at, i)
        times.append(time.perf_counter() - start)
        assert not at.exception, at.exception
    return times


def _predict_setup(run: str | None, images: list[tuple[str, bytes, str]]):
    def setup(at) -> None:
        if run:
            at.selectbox(key="pred_run").set_value(run).run()
        at.file_uploader(key="pred_files").set_value(images).run()
        if at.exception or not any(m.value.startswith("### ") for m in at.markdown):
            raise SystemExit(f"the Predict page did not classify the uploads: {at.exception or 'no run to predict with'}")

    return setup


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=os.environ.get("MEDIMAGE_MODELS_DIR", str(ROOT / "models")))
    parser.add_argument("--run", default=None, help="a run folder name in --models (default: the page's choice)")
    parser.add_argument("--reruns", type=int, default=6)
    args = parser.parse_args()
    os.environ["MEDIMAGE_MODELS_DIR"] = str(Path(args.models).resolve())
    os.chdir(ROOT)

    from streamlit.runtime.scriptrunner import script_runner

    from core.dataset import DEMO, open_dataset
    from core.runs import can_predict

    if not any(can_predict(p) for p in Path(args.models).glob("*/")):
        print(f"No run with a model in {args.models}: train one first (the Train page, or python -m core train --data demo).")
        return 2
    streamlit_default = script_runner._clean_problem_modules
    paths = open_dataset(DEMO).table["path"].iloc[:3]
    images = [(f"image{i}.png", _png(p), "image/png") for i, p in enumerate(paths)]

    def predict(clean) -> list[float]:
        return _time_reruns("pages/predict.py", clean, _predict_setup(args.run, images),
                            lambda at, i: at.selectbox(key="pred_image").set_value(images[(i + 1) % len(images)][0]).run(), args.reruns)

    def lab(clean) -> list[float]:  # the augmentation preview builds its Keras layers every run
        return _time_reruns("pages/lab.py", clean, lambda at: None,
                            lambda at, i: at.number_input(key="aug_seed").set_value(i + 1).run(), 3 * args.reruns)

    ours = predict(None)  # the hook pages/common.py installs
    pages_hook = script_runner._clean_problem_modules
    naive = predict(streamlit_default)
    lab_ours = lab(pages_hook)
    lab_naive = lab(streamlit_default)
    script_runner._clean_problem_modules = pages_hook
    for title, mine, theirs in (
        (f"Predict page, {args.reruns} image-change reruns each", ours, naive),
        (f"Lab augmentation preview, {3 * args.reruns} seed-change reruns each", lab_ours, lab_naive),
    ):
        print(f"{title} (AppTest, seconds):")
        print(f"  Streamlit's clear_session after every run: median {statistics.median(theirs):.2f} s  {[round(t, 2) for t in theirs]}")
        print(f"  the pages' hook:                           median {statistics.median(mine):.2f} s  {[round(t, 2) for t in mine]}")
        print(f"  ratio: {statistics.median(theirs) / statistics.median(mine):.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
