"""Command line: `python -m core read|scan|train|evaluate|predict|runs ...`.

Each prints a short human summary, or one JSON object with --json. Exit codes: 0 ok,
2 unreadable input (the message says why).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from core.catalog import INTENSITY, MODEL_NAMES, RECIPES
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


def _horizon(text: str) -> float:
    """--ema-epochs' value: 0 (off) or a positive number of epochs."""
    value = float(text)
    if not value >= 0.0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be 0 (off) or a positive number of epochs, e.g. 3; got {text}")
    return value


def _mix_strength(text: str) -> float:
    """--mixup's and --cutmix's value: 0 (off) up to 1, as Keras' MixUp and CutMix take it."""
    value = float(text)
    if not 0.0 <= value <= 1.0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be between 0 (off) and 1, e.g. 0.2; got {text}")
    return value


def _border_share(text: str) -> float:
    """--crop's value: the share of each side cut away, 0 (off) up to core.catalog.MAX_CROP."""
    from core.catalog import MAX_CROP

    value = float(text)
    if not 0.0 <= value <= MAX_CROP:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be between 0 (off) and {MAX_CROP} of each side, e.g. 0.1; got {text}")
    return value


def _train(args: argparse.Namespace) -> dict[str, Any]:
    from core import jobs
    from core.runs import create_run
    from core.train import blend_of, create_run_with_rows, lr_sweep_configs, make_config, overfit_preset, run_job

    args.epochs_given = args.epochs is not None
    for source in args.external:  # a wrong folder fails here, not after the first epoch
        from core.dataset_store import open_source

        open_source(source)
    args.epochs = args.epochs or 10
    if args.run:  # the worker: run an existing run folder in this process, then hand the slot on
        state = run_job(Path(args.run))
        jobs.start_next_queued(Path(args.run).parent)
        return {"run": args.run, "state": state}
    if args.recipe:
        from core.recipes import create_recipe_run

        run = create_recipe_run(args.recipe, args.data, seed=args.seed, runs_dir=Path(args.runs_dir) if args.runs_dir else None,
                                mixed_precision=args.precision, external=tuple(args.external), deterministic=args.deterministic,
                                **({"epochs": args.epochs} if args.epochs_given else {}))
        return _launch(run, args)
    config = make_config(args.data, args.model, args.image_size, args.epochs, args.batch_size, args.weights,
                         args.channels, folds=args.folds, mixed_precision=args.precision, alpha=args.alpha, freeze=args.freeze,
                         learning_rate=args.lr, fine_tune_epochs=args.fine_tune_epochs, fine_tune_lr=args.fine_tune_lr,
                         fine_tune_layers=args.fine_tune_layers, seed=args.seed, external=tuple(args.external), ema_epochs=args.ema_epochs,
                         mixup=args.mixup, cutmix=args.cutmix, cosine=args.cosine, crop=args.crop,
                         intensity=args.intensity, deterministic=args.deterministic)
    if args.mixup or args.cutmix:  # both blends, or a dataset of 3+ classes: refused before a run folder is made
        from core.dataset_store import open_source

        blend_of(config, len(open_source(args.data).classes))
    runs_dir = Path(args.runs_dir) if args.runs_dir else None
    if args.preset == "lr-sweep":
        runs = [create_run(c.to_dict(), runs_dir) for c in lr_sweep_configs(config)]
        return {"runs": [str(r) for r in runs], "states": [jobs.start(r) for r in runs]}
    if args.preset == "overfit":
        config, rows = overfit_preset(args.data, base=config)
        run = create_run_with_rows(config, rows, runs_dir)
    else:
        run = create_run(config.to_dict(), runs_dir)
    return _launch(run, args)


def _launch(run: Path, args: argparse.Namespace) -> dict[str, Any]:
    """A created run: left as it is (--create-only), started as a background job, or trained here until it ends."""
    from core import jobs
    from core.runs import read_status
    from core.train import run_job

    if args.create_only:
        return {"run": str(run), "state": read_status(run).get("state")}
    if args.background:
        return {"run": str(run), "state": jobs.start(run)}
    (run / ".claimed").touch()
    state = run_job(run, verbose=0 if args.json else 2)
    status = read_status(run)
    return {"run": str(run), "state": state, **{k: status.get(k) for k in ("epoch", "best_metric", "best_value", "threshold", "message")}}


def _runs(args: argparse.Namespace) -> dict[str, Any]:
    from core.runs import list_runs

    table = list_runs(Path(args.runs_dir) if args.runs_dir else None)
    return {"runs": table.drop(columns="path").to_dict(orient="records")}


def _evaluate(args: argparse.Namespace) -> dict[str, Any]:
    from core.dataset_store import open_source
    from core.evaluate import predict_table, split_rows, summarize
    from core.runs import read_json

    run = Path(args.run_dir)
    if not (run / "config.json").exists():
        raise MedImageError(f"{run} is not a run folder (no config.json).")
    config = read_json(run / "config.json")
    if args.data:  # an external source: every image in it
        table, name = open_source(args.data).table, "external"
    else:
        table, name = split_rows(run, args.split), args.split
    predictions = predict_table(run, table, name, tta=args.tta or None)
    return {"run": str(run), "split": name, "tta": bool(args.tta or config.get("tta")), **summarize(run, predictions)}


def _read_each(files: list[str], results: list[dict[str, Any]]):
    """(file, pixels) for each readable file; an unreadable one becomes an error row in results."""
    for file in files:
        try:
            yield file, read_image(file).pixels
        except MedImageError as exc:
            results.append({"file": file, "error": str(exc)})


def _write_cam(folder: str, file: str, pixels, heatmap) -> str:
    """The Grad-CAM overlay of one file as <folder>/<name>-gradcam.png; returns its path."""
    from core.gradcam import overlay
    from core.image_reader import encode_png

    Path(folder).mkdir(parents=True, exist_ok=True)
    out = Path(folder) / f"{Path(file).stem}-gradcam.png"
    out.write_bytes(encode_png(overlay(pixels, heatmap)))
    return str(out)


def _predict(args: argparse.Namespace) -> dict[str, Any]:
    from core.gradcam import GradCam
    from core.predict import from_model, from_run, load_model_file
    from core.similar_scores import similar_scores, validation_table

    target = Path(args.model)
    predictor = from_run(target) if target.is_dir() else from_model(load_model_file(target, target.name), name=target.name)
    validation = validation_table(target) if target.is_dir() else None
    results = []
    explainer = None
    for file, pixels in _read_each(args.files, results):
        batch = predictor.prepare(pixels)[None]
        score = predictor.scores(batch)[0]
        label = predictor.label(score)
        row = {"file": file, "label": label, "probabilities": predictor.probabilities(score)}
        if (alike := similar_scores(validation, predictor.classes, predictor.head, score, label)) is not None:
            row["validation_alike"] = {"agree": alike.agree, "of": alike.k, "borderline": alike.borderline, "says": alike.sentence()}
        if args.cam:
            try:
                explainer = explainer or GradCam(predictor.model)
                index = predictor.classes.index(label) if predictor.head != "ordinal" else 0
                row["cam"] = _write_cam(args.cam, file, pixels, explainer.explain(batch, index).heatmaps[0])
            except ValueError as exc:
                row["cam_error"] = str(exc)
        results.append(row)
    summary = {"model": predictor.name, "classes": predictor.classes, "results": results}
    if predictor.head == "binary":
        summary["threshold"] = predictor.threshold
    return summary


def _imagenet(args: argparse.Namespace) -> dict[str, Any]:

    from core import imagenet

    try:
        name = imagenet.resolve(args.model)
    except ValueError as exc:
        raise MedImageError(str(exc)) from exc
    source = imagenet.weights_source(name, args.weights)
    model = imagenet.load_classifier(name, args.weights)
    results = []
    for file, pixels in _read_each(args.files, results):
        top = imagenet.top_k(model, name, pixels, args.top)
        row = {"file": file, "top": top.to_dict(orient="records")}
        if args.cam:
            row["cam"] = _write_cam(args.cam, file, pixels, imagenet.explain(model, name, pixels, int(top.iloc[0]["index"])))
        results.append(row)
    return {"model": name, "weights": source.label if source else "downloaded by Keras", "results": results}


def _export(args: argparse.Namespace) -> dict[str, Any]:
    from core.export import export_run

    run = Path(args.run_dir)
    if not (run / "config.json").exists():
        raise MedImageError(f"{run} is not a run folder (no config.json).")
    result = export_run(run, Path(args.out), args.format, args.quantize, progress=None if args.json else lambda m: print(m, file=sys.stderr))
    return result.to_dict()


def _adapt(args: argparse.Namespace) -> dict[str, Any]:
    from core.adapt import adapt_run
    from core.runs import read_status

    progress = None if args.json else (lambda message, fraction: print(f"{fraction:4.0%} {message}", file=sys.stderr))
    child = adapt_run(Path(args.run_dir), args.images, progress=progress, class_mix=args.class_mix,
                      threshold_from_site=not args.keep_threshold)
    status = read_status(child)
    return {"run": str(child), "parent": status["parent"], "threshold": status.get("threshold"),
            "threshold_source": status.get("threshold_source"), "adaptation": status["adaptation"]}


def _check(args: argparse.Namespace) -> dict[str, Any]:
    from core.novelty import check_folder

    progress = None if args.json else (lambda message, fraction: print(f"{fraction:4.0%} {message}", file=sys.stderr))
    return check_folder(Path(args.run_dir), args.images, progress=progress)


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
    read.set_defaults(run_command=_read)
    scan = sub.add_parser("scan", help="scan a dataset source (folder, CSV, zip or 'demo')")
    scan.add_argument("source")
    scan.add_argument("--seed", type=int, default=0, help="seed of the split, when the source has none")
    scan.add_argument("--json", action="store_true")
    scan.set_defaults(run_command=_scan)
    train = sub.add_parser("train", help="train a model (foreground by default) and print the run folder")
    train.add_argument("--data", default="demo", help="dataset source: demo, a folder, a CSV, a zip, saved:<name>")
    train.add_argument("--model", default="smallnet", choices=MODEL_NAMES)
    train.add_argument("--epochs", type=int, default=None, help="default 10 (a recipe: its own)")
    train.add_argument("--image-size", type=int, default=128)
    train.add_argument("--channels", type=int, choices=(1, 3), default=None, help="default: 1 for scratch models, 3 for backbones")
    train.add_argument("--batch-size", type=int, default=16)
    train.add_argument("--weights", default="none", help="imagenet (looked up in MEDIMAGE_WEIGHTS_DIR and ~/.keras/models first), "
                       "none, or a weights file")
    train.add_argument("--alpha", type=float, default=1.0, help="MobileNet/MobileNetV2 width (0.25-1.0 / 0.35-1.4)")
    train.add_argument("--freeze", choices=("feature_extraction", "fine_tune", "full"), default="feature_extraction",
                       help="backbones: train only the head, also the last --fine-tune-layers layers, or everything")
    train.add_argument("--lr", type=float, default=1e-3, help="learning rate")
    train.add_argument("--fine-tune-epochs", type=int, default=0,
                       help="backbones: after --epochs of feature extraction, unfreeze the last layers for this many epochs")
    train.add_argument("--fine-tune-lr", type=float, default=1e-4, help="learning rate of the fine-tuning phase")
    train.add_argument("--fine-tune-layers", type=int, default=20,
                       help="how many of the backbone's last layers fine-tuning trains (BatchNorm frozen); "
                            "0 = every layer, BatchNorm included (LP-FT: the head first, then the whole network)")
    train.add_argument("--ema-epochs", type=_horizon, default=0.0, metavar="N",
                       help="average the weights over about N epochs (an exponential moving average); validation, checkpoints "
                            "and predictions use the average; 0 = off")
    train.add_argument("--mixup", type=_mix_strength, default=0.0, metavar="ALPHA",
                       help="binary head: blend training images in pairs (mixup), blend weights ~ Beta(ALPHA, ALPHA), e.g. 0.2; 0 = off")
    train.add_argument("--cutmix", type=_mix_strength, default=0.0, metavar="FACTOR",
                       help="binary head: paste a box of another training image in, the target weighted by its area (CutMix); "
                            "Keras' factor, 1.0 usual; 0 = off; not with --mixup")
    train.add_argument("--cosine", action="store_true",
                       help="the learning rate follows half a cosine from --lr towards 0 over the epochs, instead of halving "
                            "when validation loss stalls")
    train.add_argument("--crop", type=_border_share, default=0.0, metavar="SHARE",
                       help="cut this share of each side inside the model (side markers, exposure edges), e.g. 0.1 keeps the "
                            "central 80%%; Grad-CAM maps back onto the whole image; 0 = off")
    train.add_argument("--intensity", choices=INTENSITY, default="rescale",
                       help="per-image normalisation inside the model: rescale (none beyond the network's own), standardize, "
                            "equalize (histogram equalisation: blind to exposure curves)")
    train.add_argument("--runs-dir", default=None)
    train.add_argument("--folds", type=int, default=0, help="K-fold cross-validation over train+val (K >= 2)")
    train.add_argument("--preset", choices=("overfit", "lr-sweep"), default=None,
                       help="sanity checks: overfit 8 images per class; or 3-epoch runs at LR 0.1/0.01/0.001 (background)")
    train.add_argument("--background", action="store_true", help="start as a separate job and return at once")
    train.add_argument("--create-only", action="store_true",
                       help="only create the run folder and print it (then start workers with --run RUN, e.g. under TF_CONFIG)")
    train.add_argument("--recipe", choices=RECIPES, default=None,
                       help="a named recipe (patient-grouped split, tuned threshold, TTA): xray = ImageNet MobileNetV2 trained whole "
                            "(needs its weights file), xray-scratch = xraynet (no weights); see core/recipes.py")
    train.add_argument("--seed", type=int, default=0, help="seed of the split, the initial weights and the augmentation")
    train.add_argument("--deterministic", action="store_true",
                       help="the same data, settings and seed give the same model bit for bit (TensorFlow op determinism); "
                            "without it, parallel input stages make each training a new draw")
    train.add_argument("--external", action="append", default=[], metavar="DIR",
                       help="an external set (e.g. another hospital's class folders) scored after every epoch, never learned "
                            "from or used for any choice; repeatable")
    train.add_argument("--precision", choices=("auto", "on", "off"), default="auto",
                       help="mixed precision: auto (float16 on a tensor-core GPU, bfloat16 on a CPU with native bfloat16), on, off")
    train.add_argument("--run", default=None, help=argparse.SUPPRESS)  # the worker entry point
    train.add_argument("--json", action="store_true")
    train.set_defaults(run_command=_train)
    evaluate = sub.add_parser("evaluate", help="predict a split with a run's best model and print its metrics")
    evaluate.add_argument("run_dir", metavar="RUN")
    evaluate.add_argument("--data", default=None, help="another source (e.g. an external folder); default: the run's own")
    evaluate.add_argument("--split", default="test", choices=("train", "val", "test", "all"))
    evaluate.add_argument("--tta", action="store_true", help="average each image with its mirror image (default: the run's setting)")
    evaluate.add_argument("--json", action="store_true")
    evaluate.set_defaults(run_command=_evaluate)
    predict = sub.add_parser("predict", help="classify image/DICOM files with a run (folder) or a .keras file")
    predict.add_argument("model", metavar="RUN_OR_MODEL")
    predict.add_argument("files", nargs="+", metavar="FILE")
    predict.add_argument("--cam", default=None, metavar="OUT_DIR", help="write a Grad-CAM overlay PNG per file here")
    predict.add_argument("--json", action="store_true")
    predict.set_defaults(run_command=_predict)
    inet = sub.add_parser("imagenet", help="ImageNet top-k of photos with a pretrained classifier (offline with a local weights file)")
    inet.add_argument("files", nargs="+", metavar="FILE")
    inet.add_argument("--model", default="MobileNetV2", help="VGG16, ResNet50, InceptionV3, MobileNet-<alpha>, MobileNetV2-<alpha>")
    inet.add_argument("--weights", default=None, help="a with-top weights file; default: the official file in MEDIMAGE_WEIGHTS_DIR "
                      "or ~/.keras/models, else a download")
    inet.add_argument("--top", type=int, default=5)
    inet.add_argument("--cam", default=None, metavar="OUT_DIR", help="write a Grad-CAM PNG of the top class per file here")
    inet.add_argument("--json", action="store_true")
    inet.set_defaults(run_command=_imagenet)
    export = sub.add_parser("export", help="export a run's model (keras, SavedModel, TFLite), checked against the run, with a model card")
    export.add_argument("run_dir", metavar="RUN")
    export.add_argument("out", metavar="OUT", help="output folder (created); the model card is written beside the export")
    export.add_argument("--format", choices=("keras", "savedmodel", "tflite"), default="tflite")
    export.add_argument("--quantize", choices=("float16", "int8"), default=None, help="TFLite only: float16 or int8 (dynamic range) weights")
    export.add_argument("--json", action="store_true")
    export.set_defaults(run_command=_export)
    adapt = sub.add_parser("adapt", help="adapt a run to a new site from its unlabeled images (BatchNorm statistics, threshold, class prior)")
    adapt.add_argument("run_dir", metavar="RUN")
    adapt.add_argument("--images", required=True, metavar="FOLDER", help="the new site's images, any layout; labels are never read")
    adapt.add_argument("--class-mix", action="store_true",
                       help="also move untuned decisions (a binary 0.5, multi-class argmax) to the site's class mix estimated by EM; "
                            "off by default: the estimate assumes calibrated probabilities at the site and measured more often worse")
    adapt.add_argument("--keep-threshold", action="store_true",
                       help="binary runs: keep the parent's threshold. By default it moves to where the site's own scores part into two "
                            "clusters (a mixture fitted to them, no labels), and stays the parent's when they are not clearly two")
    adapt.add_argument("--json", action="store_true")
    adapt.set_defaults(run_command=_adapt)
    check = sub.add_parser("check", help="how many of a new site's images are unusual for a run (no labels read): is the site like "
                                          "the training hospital, before anyone labels it or adapts to it")
    check.add_argument("run_dir", metavar="RUN")
    check.add_argument("--images", required=True, metavar="FOLDER", help="the site's images, any layout; labels are never read")
    check.add_argument("--json", action="store_true")
    check.set_defaults(run_command=_check)
    runs = sub.add_parser("runs", help="list training runs with their state")
    runs.add_argument("--runs-dir", default=None)
    runs.add_argument("--json", action="store_true")
    runs.set_defaults(run_command=_runs)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        # with --json, stdout carries the JSON alone: what Keras prints (downloads, progress) goes to stderr
        with contextlib.redirect_stdout(sys.stderr if args.json else sys.stdout):
            result = args.run_command(args)
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
    return 1 if result.get("state") == "failed" else 0  # schedulers (and multi-worker launchers) see a failed job
