"""The model card written beside every export (Markdown for people, JSON for tools).

What a receiving team needs before trusting a file: what it is for and not for, what goes in and
comes out, the decision threshold and where it was chosen, what it was trained on, how it scored
on held-out and external images (with intervals), its known limitations, and the software.
Built from the run folder alone: config, status, the dataset split, stored predictions tables.
"""

from __future__ import annotations

import platform
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from core.atomic import write_json, write_text
from core.catalog import SCRATCH
from core.runs import read_json, read_status, run_rows

INTENDED_USE = ("Research and teaching: exploring how an image classifier behaves. NOT FOR CLINICAL USE: it is not a "
                "medical device, has not been validated prospectively, and must not inform a diagnosis or treatment.")


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("tensorflow", "keras", "numpy", "medimage-studio"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _training_data(run: Path, config: dict[str, Any]) -> dict[str, Any]:
    from core.dataset_store import open_source
    from core.errors import MedImageError
    from core.splits import patients_across

    try:
        table = run_rows(run, config, open_source(config["data"]).table)
    except (MedImageError, OSError) as exc:
        return {"source": config["data"], "error": f"the dataset could not be opened to summarise it ({exc})"}
    counts = table.groupby(["label", "split"]).size().unstack(fill_value=0)
    shared = patients_across(table)
    return {
        "source": config["data"],
        "counts": {label: {split: int(n) for split, n in row.items()} for label, row in counts.iterrows()},
        "split": "the run's own split (rows.csv)" if config.get("rows") else "the dataset's split",
        "patients_shared_train_test": shared["train_test"],
        "patients_shared_train_val": shared["train_val"],
    }


def training_procedure(config: dict[str, Any]) -> list[str]:
    """How the run was trained, one plain line each: what a team retraining or auditing the model needs besides the data.

    Read from config.json as saved; a setting an older run lacks counts as off."""
    model, augment = config.get("model", {}), config.get("augment")
    lr = float(config.get("learning_rate", 1e-3))
    if config.get("cosine"):
        schedule = "following half a cosine down over the epochs"
    elif config.get("step_decay_every"):
        schedule = f"multiplied by {config.get('step_decay_factor', 0.5)} every {config['step_decay_every']} epochs"
    elif config.get("reduce_lr_patience"):
        schedule = f"halved when the validation loss stalled for {config['reduce_lr_patience']} epochs"
    else:
        schedule = "constant"
    first = (f"{str(config.get('optimizer', 'adam')).capitalize()}, learning rate {lr:g} ({schedule}), "
             f"batch {config.get('pipeline', {}).get('batch_size', '?')}, up to {config.get('epochs')} epochs")
    if config.get("fine_tune_epochs"):
        first += f", then {config['fine_tune_epochs']} of fine-tuning at {config.get('fine_tune_lr', 1e-4):g}"
    first += f"; best checkpoint on {config.get('monitor', 'val_loss')}"
    if config.get("early_stopping_patience"):
        first += f", early stopping after {config['early_stopping_patience']} epochs without improvement"
    lines = [first + "."]
    pretrained = model.get("weights") not in (None, "none")
    if pretrained or config.get("fine_tune_epochs"):  # a backbone (only backbones have two phases)
        trained = {"feature_extraction": "only the new head trained", "full": "trained whole",
                   "fine_tune": f"its last {model.get('fine_tune_layers', 20)} layers and the head trained"}
        how = trained.get(model.get("freeze"), model.get("freeze"))
        if config.get("fine_tune_epochs"):
            layers = model.get("fine_tune_layers", 20)
            how += (", then every layer, BatchNorm included" if layers == 0 else f", then its last {layers} layers too (BatchNorm frozen)")
        start = f"started from {model['weights']} weights" if pretrained else "randomly initialised"
        lines.append(f"Backbone {start}, {how}.")
    if augment:
        lines.append("Augmentation: " + ", ".join(f"{k} {v}" for k, v in augment.items() if v not in (0, 0.0, "none")) + ".")
    else:
        lines.append("No augmentation.")
    intensity = {"equalize": "histogram-equalised", "standardize": "standardised"}.get(model.get("intensity", "rescale"))
    bn_epochs = config.get("batchnorm_epochs") or 0  # missing in a run configured before it existed: the network's own momentum
    extras = [(f"each image {intensity} inside the model", intensity),
              ("class-weighted loss", config.get("class_weighting")),
              (f"label smoothing {config.get('label_smoothing')}", config.get("label_smoothing")),
              (f"mixup (alpha {config.get('mixup')})", config.get("mixup")),
              (f"CutMix (factor {config.get('cutmix')})", config.get("cutmix")),
              (f"weights averaged over about {config.get('ema_epochs')} epochs", config.get("ema_epochs")),
              (f"border crop {model.get('crop')} of each side", model.get("crop")),
              (f"BatchNorm statistics over about the last {bn_epochs:g} epoch{'' if bn_epochs == 1 else 's'} at most", bn_epochs),
              ("mirror test-time augmentation when the threshold was chosen", config.get("tta"))]
    chosen = [text for text, on in extras if on]
    if chosen:
        lines.append(chosen[0][0].upper() + "; ".join(chosen)[1:] + ".")
    lines.append(f"Seed {config.get('seed', 0)}" + (", with TensorFlow's op determinism: retraining with these settings gives "
                                                    "the same weights." if config.get("deterministic") else "."))
    if config.get("adapted_from"):  # written by core.adapt into the child's config
        lines.append(f"Then adapted, not trained: run {config['adapted_from']}'s model with its BatchNorm statistics "
                     f"re-measured on the unlabeled images of {Path(str(config.get('adapted_on', '?'))).name} (no labels read).")
    return lines


def _evaluations(run: Path) -> dict[str, Any]:
    from core.evaluate import load_predictions, stored_predictions, summarize

    out = {}
    for name in stored_predictions(run):  # an earlier model's (the run trained on since) would misreport this one
        if (table := load_predictions(run, name)) is None:  # it trained on in between
            continue
        summary = summarize(run, table, n_boot=1000)
        keep = ("n", "accuracy", "accuracy_ci95", "auc", "auc_ci95", "sensitivity", "sensitivity_ci95", "specificity",
                "specificity_ci95", "f1", "f1_ci95", "kappa", "kappa_ci95", "brier", "ece", "threshold")
        out[name] = {k: summary[k] for k in keep if k in summary}
        if "unusual" in table:  # the run's unusual-image check (core.novelty) was on when these were predicted
            out[name]["unusual"] = int(table["unusual"].astype(bool).sum())
    return out


def _unusual_rule(run: Path) -> dict[str, Any] | None:
    """What an evaluation's "unusual" count means for this run (core.novelty), or None when it was never measured."""
    from core.novelty import load

    reference = load(run)
    if reference is None:
        return None
    return {"rule": f"further from the training images, in the features the final layer reads, than 99% of {reference.source}",
            "expected_share": round(reference.expected_share, 4)}


def model_card(run: Path, export: dict[str, Any]) -> dict[str, Any]:
    """The card's content as a dict (the JSON file)."""
    from core.evaluate import threshold_source

    run = Path(run)
    config, status = read_json(run / "config.json"), read_status(run)
    model = config.get("model", {})
    intensity = model.get("intensity", "rescale")
    evaluations = _evaluations(run)
    external = {k: v for k, v in evaluations.items() if k.startswith("external")}
    limitations = [
        "Trained on one source of images; scanners, hospitals, populations and disease prevalence elsewhere can lower "
        "its accuracy without warning.",
        "Not validated prospectively or against a clinical reference standard beyond the dataset's labels.",
        "The threshold trades missed cases against false alarms for this dataset's prevalence; re-check it on local data.",
        "Grad-CAM maps show where the model looked, not where disease is.",
    ]
    if not external:
        limitations.insert(0, "No external validation: it was never scored on images from another site.")
    limitations.append("It answers on any image, one unlike its training images included. The dashboard's check of unusual "
                       "images (Predict, Evaluate) is not part of the exported file.")
    if config.get("tta"):
        limitations.append("The run averaged each image with its mirror image (test-time augmentation) when its threshold was "
                           "chosen; this exported file scores the image alone.")
    return {
        "model": run.name,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "intended_use": INTENDED_USE,
        "classes": status.get("classes"),
        "head": model.get("head", "binary"),
        "input": {"size": [int(model.get("image_size", 128))] * 2, "channels": int(model.get("channels", 1)),
                  "colour": "grayscale" if int(model.get("channels", 1)) == 1 else "RGB",
                  "values": "raw pixels 0-255 (float32); normalisation is inside the model",
                  "normalisation": intensity if model.get("name") in SCRATCH
                  else ("" if intensity == "rescale" else f"{intensity} then ") + f"{model.get('name')} preprocess_input",
                  # cut inside the model: send the whole image, as for training
                  "border_crop": float(model.get("crop", 0.0))},
        "output": "P(" + str((status.get("classes") or ["", "positive"])[-1]) + ")" if model.get("head", "binary") == "binary"
        else "one probability per class",
        "architecture": {"name": model.get("name"), "weights": model.get("weights"), "alpha": model.get("alpha")},
        "threshold": status.get("threshold", 0.5), "threshold_source": threshold_source(run, status),
        "training": {"epochs": status.get("epoch"), "precision": status.get("precision"), "seed": config.get("seed"),
                     "procedure": training_procedure(config), "data": _training_data(run, config)},
        "evaluations": evaluations,
        "unusual_images": _unusual_rule(run),
        "limitations": limitations,
        "export": export,
        "software": _versions(),
    }


def _ci(values: dict[str, Any], key: str) -> str:
    point = values.get(key)
    if point is None:
        return "n/a"
    ci = values.get(f"{key}_ci95")
    return f"{point:.3f}" + (f" ({ci[0]:.3f}-{ci[1]:.3f})" if ci else "")


def to_markdown(card: dict[str, Any]) -> str:
    data = card["training"]["data"]
    lines = [f"# Model card: {card['model']}", "", f"**Intended use.** {card['intended_use']}", "",
             "## Input and output", "",
             f"- Input: {card['input']['size'][0]} x {card['input']['size'][1]} px, {card['input']['colour']}, "
             f"{card['input']['values']} ({card['input']['normalisation']}).",
             f"- Classes: {', '.join(card['classes'] or [])}; output {card['output']}.",
             f"- Decision threshold: {card['threshold']:.3f} ({card['threshold_source']}).", "",
             "## Training data", "", f"- Source: {data.get('source')}; split: {data.get('split', 'n/a')}."]
    if "counts" in data:
        lines += [f"- Patients on both sides of train/test: {data['patients_shared_train_test']}; train/validation: "
                  f"{data['patients_shared_train_val']} (file names carrying patient ids; 0 = grouped by patient).", "",
                  "| class | " + " | ".join(sorted({s for c in data["counts"].values() for s in c})) + " |",
                  "| --- |" + " --- |" * len({s for c in data["counts"].values() for s in c})]
        splits = sorted({s for c in data["counts"].values() for s in c})
        lines += [f"| {label} | " + " | ".join(str(c.get(s, 0)) for s in splits) + " |" for label, c in data["counts"].items()]
    elif "error" in data:
        lines.append(f"- {data['error']}")
    lines += ["", "## Training procedure", ""] + [f"- {line}" for line in card["training"].get("procedure", [])]
    lines += ["", "## Evaluation (95% bootstrap intervals)", ""]
    if card["evaluations"]:
        checked = any("unusual" in v for v in card["evaluations"].values())
        lines += ["| images | n | accuracy | AUC | sensitivity | specificity |" + (" unusual |" if checked else ""),
                  "| --- | --- | --- | --- | --- | --- |" + (" --- |" if checked else "")]
        for name, v in card["evaluations"].items():
            unusual = (f" {v['unusual']} ({v['unusual'] / max(v.get('n') or 1, 1):.0%}) |" if "unusual" in v else " n/a |") if checked else ""
            rates = " | ".join(_ci(v, k) for k in ("accuracy", "auc", "sensitivity", "specificity"))
            lines.append(f"| {name} | {v.get('n')} | {rates} |{unusual}")
        rule = card.get("unusual_images")
        if checked and rule:
            lines += ["", f"Unusual: {rule['rule']} (about {rule['expected_share']:.0%} of images like those would be). A share "
                          "well above that says the images differ from the training images; a share near it rules out gross "
                          "differences only."]
    else:
        lines.append("No stored evaluation: run Evaluate (or `python -m core evaluate`) before exporting.")
    lines += ["", "## Limitations", ""] + [f"- {item}" for item in card["limitations"]]
    export = card["export"]
    lines += ["", "## This file", "",
              f"- {export['file']} ({export['format']}{', ' + export['quantize'] if export.get('quantize') else ''}), "
              f"{export['size_bytes'] / 1e6:.2f} MB.",
              f"- Checked against the run's Keras model on {export['checked_images']} of its images: max abs difference "
              f"{export['max_abs_diff']:.2e} (allowed {export['tolerance']:.0e}).",
              f"- Trained for {card['training']['epochs']} epochs in {card['training']['precision']}; exported in float32 compute.",
              "", "## Software", "", ", ".join(f"{k} {v}" for k, v in card["software"].items()), ""]
    return "\n".join(lines)


def write_model_card(run: Path, out_dir: Path, export: dict[str, Any]) -> tuple[Path, Path]:
    """model_card.json and model_card.md in out_dir, written atomically."""
    card = model_card(run, export)
    out_dir = Path(out_dir)
    write_json(out_dir / "model_card.json", card)
    write_text(out_dir / "model_card.md", to_markdown(card))
    return out_dir / "model_card.md", out_dir / "model_card.json"
