"""Evaluate: predict a split (or an external folder) once, then every metric, plot and the report from that table."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from core import charts, metrics
from core.adapt import adapt_run, adaptation_summary
from core.dataset import class_counts
from core.errors import MedImageError
from core.evaluate import (
    choose_threshold,
    load_predictions,
    misclassified,
    models_mtime,
    predict_table,
    predictions_path,
    save_threshold,
    summarize,
    threshold_source,
)
from core.external import external_name
from core.glossary import GLOSSARY, help_text, term_for
from core.gradcam import overlay
from core.image_reader import read_image
from core.models import ModelConfig
from core.novelty import site_summary
from core.report import build_report
from core.runs import list_runs, over_seeds, read_json, read_status, run_rows, settings_that_differ
from pages.common import explainer_for, load_dataset, model_key, novelty_for, predictor_for, run_labels, runs_with_models, thumbnail
from pages.flow import end_page

st.title("Evaluate")
runs = runs_with_models(list_runs())
if runs.empty:
    st.info("No trained model yet. Train one on the Train page (the defaults take a few minutes on a CPU), then come back.")
    end_page()

names = runs["run"].tolist()
paths = dict(zip(runs["run"], runs["path"], strict=True))
cols = st.columns([2, 3])
primary = cols[0].selectbox("Run", names, key="eval_run", format_func=run_labels(runs), help="The trained model to evaluate.")
others = cols[1].multiselect("Compare with", [n for n in names if n != primary], key="eval_compare", format_func=run_labels(runs),
                             help="Other runs drawn on the same curves and in the comparison table.")
run = Path(paths[primary])
config, status = read_json(run / "config.json"), read_status(run)
classes = status["classes"]

cols = st.columns([2, 3, 2])
target = cols[0].radio("Evaluate on", ["test split", "validation split", "external folder"], key="eval_target",
                       help="The test split gives the honest score; the validation split is where thresholds are chosen; an "
                            "external folder (another hospital) shows whether the model travels.")
external = cols[1].text_input(
    "External folder (class folders, e.g. another hospital's test set)", key="eval_external", disabled=target != "external folder"
)
tta = cols[2].checkbox(
    "Mirror test-time augmentation",
    value=bool(config.get("tta", False)),
    key="eval_tta",
    help="Average each image's prediction with its mirror image's: a little steadier, twice the time.",
)

if target == "external folder":
    if not external.strip():
        st.info("Type the path of a folder of class folders to evaluate on data the model has never seen.")
        end_page()
    source, split = external.strip(), "all"
    name = external_name(source)
else:
    source, split = config["data"], "test" if target == "test split" else "val"
    name = split
suffix = "" if tta == bool(config.get("tta", False)) else "-tta" if tta else "-notta"
name += suffix


def rows_to_predict():
    dataset = load_dataset(source)
    if dataset is None:
        end_page()
    if split == "all":
        return dataset, dataset.table
    table = run_rows(run, config, dataset.table)  # the run's own split (a recipe's patient-grouped one, a fold)
    return dataset, table[table["split"] == split]


def ensure_predictions(folder: Path, label: str):
    """Stored predictions of a run for this target, predicting them now (with progress) if missing."""
    stored = load_predictions(folder, name)
    if stored is not None:
        return stored
    _, table = rows_to_predict()
    bar = st.progress(0.0, text=f"Predicting with {label}...")
    try:
        return predict_table(
            folder, table, name, progress=lambda d, t: bar.progress(d / max(t, 1), text=f"Predicting with {label}... {d}/{t}"), tta=tta
        )
    except MedImageError as exc:
        st.error(f"{label}: {exc}")
        return None
    finally:
        bar.empty()


predictions = load_predictions(run, name)
cols = st.columns([1, 4])
if cols[0].button("Predict" if predictions is None else "Predict again", type="primary" if predictions is None else "secondary",
                  key="predict_go"):  # a key: the label changing must not remount what follows (the open tab)
    predictions_path(run, name).unlink(missing_ok=True)
    predictions = ensure_predictions(run, primary)
    if predictions is not None:
        st.rerun()  # drawn from the stored table, with the button now saying "Predict again"
if predictions is None:
    if predictions_path(run, name).exists():
        st.info(f"The stored predictions of {primary} on the {target} came from an earlier model: the run trained on since. "
                "Press Predict to score the present one (its metrics would otherwise be the old model's).")
    else:
        st.info(f"No predictions of {primary} on the {target} yet. Press Predict: the model runs once and the table is kept in "
                "the run folder.")
    end_page()
cols[1].caption(f"{len(predictions)} images · predictions stored in the run folder as predictions-{name}.csv")
if "unusual" in predictions and (reference := novelty_for(str(run))) is not None:  # predicted with the check of unusual images
    st.caption(site_summary(reference, predictions["unusual"].to_numpy(bool)), help=help_text("unusual image"))


@st.cache_data(show_spinner="Bootstrapping 1,000 resamples for the intervals...", max_entries=64)
def cached_summary(run_path: str, pred_name: str, mtime: float, threshold: float | None):
    return summarize(Path(run_path), load_predictions(Path(run_path), pred_name), n_boot=1000, threshold=threshold)


@st.cache_data(show_spinner="Computing the Grad-CAM...", max_entries=32)
def gallery_cam(model_key: str, _predictor, path: str, class_index: int) -> tuple[np.ndarray, str]:
    """The gallery's overlay for one image, kept per model (its key changes when a new checkpoint loads): the threshold
    slider and every other widget rerun the page, and the map does not change with them."""
    pixels = read_image(path).pixels
    cam = explainer_for(_predictor).explain(_predictor.prepare(pixels)[None], class_index=class_index)
    return overlay(pixels, cam.heatmaps[0], 0.4), cam.layer


def summary_for(folder: Path, threshold: float | None = None):
    path = folder / f"predictions-{name}.csv"
    return cached_summary(str(folder), name, path.stat().st_mtime, threshold)


head = ModelConfig.from_dict(config.get("model", {})).head
threshold = None
CARDS = ("accuracy", "sensitivity", "specificity", "f1", "auc", "ppv")  # a binary run's live metrics, left to right


def card_label(key: str) -> str:
    return key.upper() if key in ("auc", "ppv") else key.capitalize()


if head == "binary":
    y = (predictions["label"] == classes[1]).to_numpy(int)
    p = predictions[f"p_{classes[1]}"].to_numpy(float)
    key = f"eval_threshold_{primary}"
    st.session_state.setdefault(key, float(round(status.get("threshold", 0.5), 3)))

    def choose(kind: str) -> None:
        """Youden or target sensitivity, always chosen on the validation split, then applied here."""
        try:
            value, source = choose_threshold(load_predictions(run, "val" + suffix), classes, kind, st.session_state["eval_target_sens"])
        except MedImageError as exc:
            st.session_state["eval_message"] = str(exc)
            return
        st.session_state[key] = float(round(value, 3))
        st.session_state["eval_source"] = source

    st.subheader("Decision threshold")
    cols = st.columns([3, 2, 2.4, 1.4, 2])
    threshold = cols[0].slider(f"P({classes[1]}) threshold", 0.0, 1.0, step=0.001, format="%.3f", key=key, help=help_text("threshold"))
    cols[1].button("Youden (validation)", on_click=choose, args=("youden",), key="eval_youden",
                   help="The threshold with the best balance of sensitivity and specificity, chosen on the validation split.")
    cols[3].number_input("Target sensitivity", 0.5, 1.0, 0.95, 0.01, key="eval_target_sens", help=help_text("sensitivity"))
    cols[2].button("Target sensitivity (validation)", on_click=choose, args=("sensitivity",), key="eval_sens",
                   help="The threshold that finds at least the target share of sick patients with the fewest false alarms, "
                        "chosen on validation.")
    if cols[4].button("Save threshold to run", help="Predict and later evaluations use it."):
        save_threshold(run, threshold, st.session_state.get("eval_source", "set by hand on the Evaluate page"))
        st.success(f"Saved {threshold:.3f} with {primary}; the Predict page uses it.")
    if st.session_state.get("eval_message"):
        st.warning(st.session_state.pop("eval_message"))
    st.caption(f"Saved with the run: {status.get('threshold', 0.5):.3f} ({threshold_source(run, status)}).")
    live = metrics.binary_metrics(y, p, threshold)
    for col, k in zip(st.columns(len(CARDS)), CARDS, strict=True):
        col.metric(card_label(k), "n/a" if not np.isfinite(live[k]) else f"{live[k]:.4f}", help=help_text(term_for(k)))

summary = summary_for(run, threshold)
if head == "binary":  # the intervals of the cards above, at this threshold (the Report tab lists every metric's)
    st.caption("95% bootstrap intervals: " + " · ".join(
        f"{card_label(k)} {lo:.3f}-{hi:.3f}" for k in CARDS for lo, hi in [summary[f"{k}_ci95"]] if np.isfinite(lo)))
tabs = st.tabs(["Confusion", "Curves", "Calibration", "Report", "Misclassified", "Compare runs", "Generalisation gap", "Download",
               "Export", "Adapt to a site"], key="evaluate_tabs")
with tabs[0]:
    normalise = st.toggle("Row-normalised", key="eval_norm", help="Show each true class as shares that add up to 1.")
    st.caption(help_text("confusion matrix"))
    st.plotly_chart(charts.confusion_figure(summary["confusion_matrix"], classes, normalise), width="stretch")
    if head != "binary":
        st.plotly_chart(charts.kappa_matrices_figure(summary["observed"], summary["expected"], summary["weights"], classes), width="stretch")
    if head == "multiclass":
        st.plotly_chart(charts.per_class_figure(summary["report"]), width="stretch")
with tabs[1]:
    if head == "binary" and len(np.unique(y)) == 2:
        curves = {primary: (y, p)}
        for other in others:
            theirs = ensure_predictions(Path(paths[other]), other)
            if theirs is not None and f"p_{classes[1]}" in theirs:
                curves[other] = ((theirs["label"] == classes[1]).to_numpy(int), theirs[f"p_{classes[1]}"].to_numpy(float))
        cols = st.columns(2)
        cols[0].plotly_chart(charts.roc_figure(curves, threshold), width="stretch")
        cols[1].plotly_chart(charts.pr_figure(curves), width="stretch")
        st.plotly_chart(charts.threshold_figure(metrics.threshold_table(y, p), threshold), width="stretch")
    else:
        st.info("ROC and PR curves need a binary model and both classes among the evaluated images.")
with tabs[2]:
    if head == "binary":
        ece, predicted, observed, counts = metrics.calibration(y, p)
        st.plotly_chart(charts.reliability_figure(predicted, observed, counts, ece), width="stretch")
        st.caption(f"Brier score {summary['brier']:.4f} · expected calibration error {ece:.4f} (10 bins). " + help_text("calibration"))
    else:
        st.info("Calibration is shown for binary models.")
with tabs[3]:
    rows = {k: v for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    intervals = {k[:-5]: v for k, v in summary.items() if k.endswith("_ci95")}
    st.dataframe(
        [
            {"metric": k, "value": round(v, 4), "95% CI": f"{intervals[k][0]:.4f} to {intervals[k][1]:.4f}" if k in intervals else "",
             "meaning": GLOSSARY.get(term_for(k), "")}
            for k, v in rows.items()
        ],
        hide_index=True,
    )
    if "report" in summary:
        st.dataframe(summary["report"], width="stretch")
    if head == "ordinal":
        st.caption(
            f"Quadratic kappa with rounding {summary['kappa_rounding']:.4f}; with cut-points optimised on validation "
            f"{summary['kappa']:.4f} (cut-points {summary['cutpoints']})."
        )
with tabs[4]:
    wrong = misclassified(predictions, classes, head, threshold if threshold is not None else 0.5)
    if wrong.empty:
        st.success("No misclassified images at this threshold.")
    else:
        pairs = (wrong["label"] + " → " + wrong["predicted"]).value_counts()
        pair = st.selectbox("Confusion", ["all"] + [f"{k} ({v})" for k, v in pairs.items()], key="eval_pair")
        if pair != "all":
            true, pred = pair.rsplit(" (", 1)[0].split(" → ")
            wrong = wrong[(wrong["label"] == true) & (wrong["predicted"] == pred)]
        past = f" (furthest past the threshold {threshold:.3f} first)" if threshold is not None else ""
        st.caption(f"{len(wrong)} images, most confident mistakes first{past}.")
        shown = list(wrong.head(24).itertuples())
        for start in range(0, len(shown), 6):  # a row of columns per 6 images: captions that wrap cannot stagger the rows
            for col, row in zip(st.columns(6), shown[start:start + 6], strict=False):
                image = thumbnail(row.path)
                caption = f"{Path(row.path).name} · true {row.label} · predicted {row.predicted} · {row.shown}"
                if image is None:
                    col.warning(f"{Path(row.path).name}: unreadable")
                else:
                    col.image(image, caption=caption, width="stretch")
        # on request: loading the model and tracing its gradients takes seconds, which every first view used to wait for
        chosen = st.selectbox("Grad-CAM for", wrong["path"].head(24).tolist(), index=None, format_func=lambda s: Path(s).name,
                              placeholder="Choose an image to see where the model looked", key="eval_cam")
        if chosen:
            try:
                predictor = predictor_for(str(run))
                index = classes.index(wrong.set_index("path").loc[chosen, "predicted"]) if head != "ordinal" else 0
                image, layer = gallery_cam(model_key(predictor), predictor, chosen, index)
                st.image(image, caption=f"Grad-CAM for the predicted class ({layer})", width=360)
            except (MedImageError, ValueError) as exc:
                st.warning(f"No Grad-CAM for this image: {exc}")
with tabs[5]:
    if not others:
        st.info("Pick runs under 'Compare with' to see their headline metrics side by side (each predicts this target once).")
    else:
        table = []
        for label in [primary, *others]:
            folder = Path(paths[label])
            if ensure_predictions(folder, label) is None:
                continue
            s = summary if label == primary else summary_for(folder)
            table.append(
                {
                    "run": label,
                    **{k: round(s[k], 4) for k in ("accuracy", "auc", "f1", "kappa", "sensitivity", "specificity") if k in s},
                    **{f"{k} 95% CI": f"{s[k + '_ci95'][0]:.3f}-{s[k + '_ci95'][1]:.3f}"
                       for k in ("accuracy", "auc", "sensitivity", "specificity") if k + "_ci95" in s},
                }
            )
        frame = pd.DataFrame(table).set_index("run")
        numeric = [c for c in frame.columns if "CI" not in c]
        st.dataframe(frame.style.highlight_max(subset=numeric, color="#d4edda").format(precision=4), width="stretch")
        differ = settings_that_differ({label: Path(paths[label]) for label in [primary, *others]})
        st.markdown("**Settings that differ**")
        if differ.empty:
            st.caption("These runs were trained with the same settings, seed included.")
        else:
            st.dataframe(differ.astype(str), width="stretch")
        grouped = over_seeds(frame[numeric], differ)
        if not grouped.empty:
            st.markdown("**Over seeds** (runs trained alike but for the seed: mean ± sd)")
            st.dataframe(grouped, width="stretch")
            st.caption("Compare variants by these means. A difference smaller than the ± spread is what drawing another "
                       "seed does, not what the change does; judging a variant on one run each is judging the seed.")
with tabs[6]:
    from core.generalisation import GAP_METRICS, INTERNAL_LABEL, gap_display, gap_sentences, gap_table

    @st.cache_data(show_spinner="Bootstrapping the intervals...", max_entries=16)
    def cached_gap(run_path: str, stamp: tuple) -> object:
        return gap_table(Path(run_path))

    stamp = (models_mtime(run), *sorted((p.name, p.stat().st_mtime) for p in run.glob("predictions-*.csv")))
    gap = cached_gap(str(run), stamp)
    if gap.empty or gap.iloc[0]["set"] != INTERNAL_LABEL or len(gap) < 2:
        st.info("The gap needs this run's test-split predictions and at least one external set's: predict the test split, then "
                "an external folder (Evaluate on: external folder), or train with external sets watched (Train page).")
    else:
        st.caption("The same model, at its saved threshold, on its own test split and on each external set (e.g. another "
                   "hospital). Intervals are bootstrap 95%.")
        cols = st.columns(2)
        for i, metric in enumerate(GAP_METRICS):
            cols[i % 2].plotly_chart(charts.gap_figure(gap, metric), width="stretch")
        for sentence in gap_sentences(gap):
            (st.warning if "do not overlap" in sentence else st.markdown)(sentence)
        st.dataframe(gap_display(gap), hide_index=True, width="stretch")
with tabs[7]:
    dataset, _ = rows_to_predict()
    cols = st.columns(3)
    cols[0].download_button("Predictions (CSV)", predictions.to_csv(index=False), f"{primary}-predictions-{name}.csv", "text/csv")
    cols[1].download_button("Metrics (JSON)", json.dumps(summary, default=float, indent=1), f"{primary}-metrics-{name}.json", "application/json")
    # built only when clicked: the HTML inlines plotly (a few MB), too much to redo on every slider move
    cols[2].download_button("Report (HTML)", lambda: build_report(run, name, predictions, summary, class_counts(dataset.table)),
                            f"{primary}-report-{name}.html", "text/html")
    st.caption("The report opens offline in any browser; print it to PDF from there.")

with tabs[8]:
    st.caption("A deployable copy of this run's model with its preprocessing inside, checked against the run on 32 of its "
               "images, and a model card (intended use, data, every stored evaluation with intervals, limitations) beside it.")
    cols = st.columns([1, 1, 3])
    export_format = cols[0].selectbox("Format", ["tflite", "savedmodel", "keras"], key="exp_format",
                                      help="TFLite for phones and edge devices, SavedModel for TensorFlow Serving, .keras for Keras.")
    quantize = cols[1].selectbox("Quantisation", ["none", "float16", "int8"], key="exp_quantize", disabled=export_format != "tflite",
                                 help="Smaller files: float16 halves the size, int8 quarters it, with small changes in the probabilities.")
    out_dir = cols[2].text_input("Output folder", str(run / "export"), key="exp_out")
    if st.button("Export", type="primary", key="exp_go"):
        from core.export import export_run

        with st.status("Exporting...", expanded=True) as box:
            try:
                result = export_run(run, Path(out_dir), export_format, None if quantize == "none" or export_format != "tflite" else quantize,
                                    progress=st.write)
                box.update(label="Exported and checked", state="complete")
                st.session_state["exp_result"] = result.to_dict()
            except MedImageError as exc:
                box.update(label="Export failed", state="error")
                st.error(str(exc))
    result = st.session_state.get("exp_result")
    if result and Path(result["card_md"]).exists():
        st.success(f"{result['path']} ({result['size_bytes'] / 1e6:.2f} MB): max difference from the run's model "
                   f"{result['max_abs_diff']:.1e} on {result['checked_images']} images (allowed {result['tolerance']:.0e}).")
        card = Path(result["card_md"]).read_text()
        st.download_button("Model card (Markdown)", card, "model_card.md", "text/markdown", key="exp_card")
        if Path(result["path"]).is_file():
            st.download_button(f"Download {Path(result['path']).name}", Path(result["path"]).read_bytes(), Path(result["path"]).name,
                               key="exp_file")
        with st.expander("Model card"):
            st.markdown(card)

with tabs[9]:
    st.caption("Another hospital's scanner shifts the image statistics and its patients shift the class mix. Adaptation "
               "makes a new run from this one using only the new site's images, without their labels: BatchNorm "
               "statistics re-measured on the site, the threshold moved to where the site's own scores part, and its class mix "
               "estimated (shown; applied only if you ask). The "
               "adapted run appears in every run list (Evaluate, Predict, export); evaluate it on the site's labelled "
               "images, if you have some, before trusting it.")
    folder = st.text_input("Folder of the new site's images (any layout; labels are not read)", key="adapt_folder")
    from_site = st.checkbox("Move the threshold to where this site's scores part (two classes)", value=True, key="adapt_site",
                            help="A mixture of two clusters is fitted to the adapted model's scores on the site's images, and the "
                                 "threshold goes to the boundary between them: no labels, and no need for calibrated scores. It "
                                 "stays the run's when the scores are not clearly two clusters (one class, or a model that cannot "
                                 "tell them apart there). On another hospital's X-rays it gained 1-3 points of accuracy over the "
                                 "run's own threshold, clearing more healthy patients and missing a few more sick ones.")
    class_mix = st.checkbox("Also move untuned decisions to the site's estimated class mix", key="adapt_mix",
                            help="EM estimates the site's class proportions from the adapted model's probabilities and moves a "
                                 "binary 0.5 (or the multi-class argmax) to them. It assumes those probabilities are calibrated at the "
                                 "site, which adaptation does not give: measured, it more often cost accuracy than gained it. A tuned "
                                 "threshold (Youden, target sensitivity) never moves by it, and a binary threshold the site's "
                                 "scores moved needs nothing more.")
    clicked = st.button("Adapt", type="primary", key="adapt_go")
    if clicked and not folder.strip():
        st.warning("Type the folder of the new site's images first.")
    elif clicked:
        bar = st.progress(0.0, text="Adapting...")
        try:
            child = adapt_run(run, folder.strip(), progress=lambda message, fraction: bar.progress(min(fraction, 1.0), text=message),
                              class_mix=class_mix, threshold_from_site=from_site)
            st.session_state["adapt_result"] = child.name
            st.toast(f"Adapted run {child.name} created", icon=":material/check_circle:")
        except MedImageError as exc:
            st.error(str(exc))
        finally:
            bar.empty()
    if st.session_state.get("adapt_result"):
        child = st.session_state["adapt_result"]
        st.success(f"{adaptation_summary(child, read_status(run.parent / child))} Choose it in the Run list above or on the Predict page.")
