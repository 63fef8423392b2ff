"""Home: what the tool does, the presenter's tour, the active dataset at a glance, and a glossary.

Home is the first thing every visitor sees, so it imports nothing heavy until asked: TensorFlow only
loads when the tour runs (README: "Cold start").
"""

from pathlib import Path

import streamlit as st

TOUR_KEY = "tour_run"

st.title("MedImage Studio")
st.markdown(
    "Explore a medical image dataset, train a classifier in the background while watching its "
    "curves, evaluate it the way clinicians need, and run it on an uploaded X-ray or DICOM with "
    "an explanation of what it looked at. Everything runs on this machine; nothing is uploaded "
    "anywhere. **Not for clinical use.**"
)

# ---- the presenter's tour -----------------------------------------------------------------------
st.subheader("Presenter's tour")
cols = st.columns([1, 3])
if cols[0].button("Start the tour", type="primary", icon=":material/play_arrow:", key="tour_start"):
    from core.errors import MedImageError
    from core.tour import start_tour

    try:
        st.session_state[TOUR_KEY] = str(start_tour())
    except MedImageError as exc:
        st.error(str(exc))
cols[1].caption("One click tells the whole story on the built-in demo X-rays in about a minute: a model learns in the "
                "background while you watch, is tested on X-rays it never saw, and explains one of them with a heat map.")


def tour_training(run: Path) -> None:
    """Step 1, live: progress and curves every second until the job ends, then the rest of the page."""
    from core.charts import training_curves_figure
    from core.runs import effective_state, read_metrics, read_status
    from core.tour import training_sentence

    status = read_status(run)
    state = effective_state(status)
    st.markdown("**1 · Learning.** " + training_sentence(status))
    epoch, total = int(status.get("epoch", 0)), int(status.get("epochs", 1) or 1)
    st.progress(min(epoch / total, 1.0), text=f"{state} · epoch {epoch}/{total}" if state != "queued" else "waiting for another job to finish")
    metrics = read_metrics(run)
    if len(metrics):
        st.plotly_chart(training_curves_figure(metrics), width="stretch", key="tour_curves")
    if state == "completed":
        st.rerun(scope="app")
    elif state in ("failed", "stopped", "interrupted"):
        st.error(f"The tour's training {state}: {status.get('message') or 'see its log on the Train page'}.")


@st.cache_data(show_spinner="Testing the model on X-rays it never saw...", max_entries=4)
def tour_results(run_path: str):
    from core.tour import tour_evaluation, tour_example

    evaluation = tour_evaluation(Path(run_path))
    return evaluation, tour_example(Path(run_path), evaluation)


def tour_story(run: Path) -> None:
    """Steps 2 and 3, once the model is trained."""
    from core import charts, tour
    from core.glossary import help_text
    from core.gradcam import overlay
    from core.runs import read_metrics

    st.markdown("**1 · Learning.** Done: the model went through the training X-rays "
                f"{len(read_metrics(run))} times ({run.name}).")
    evaluation, example = tour_results(str(run))
    summary = evaluation.summary
    st.markdown("**2 · Testing.** " + tour.result_sentence(summary, evaluation.classes))
    cols = st.columns(4)
    cols[0].metric("Sensitivity", f"{summary['sensitivity']:.2f}", help=help_text("sensitivity"))
    cols[1].metric("Specificity", f"{summary['specificity']:.2f}", help=help_text("specificity"))
    cols[2].metric("AUC", f"{summary['auc']:.2f}", help=help_text("AUC"))
    cols[3].metric("Threshold", f"{evaluation.threshold:.2f}", help=help_text("threshold"))
    left, right = st.columns(2)
    left.plotly_chart(charts.confusion_figure(summary["confusion_matrix"], evaluation.classes), width="stretch", key="tour_confusion")
    left.caption(help_text("confusion matrix"))
    right.plotly_chart(charts.roc_figure({"tour model": (evaluation.y, evaluation.p)}, evaluation.threshold), width="stretch", key="tour_roc")
    right.caption(tour.auc_sentence(summary))
    st.markdown(tour.threshold_sentence(evaluation.threshold, evaluation.threshold_source, evaluation.classes))
    st.markdown("**3 · Explaining.** " + tour.heatmap_sentence(example))
    cols = st.columns(3)
    cols[0].image(example.pixels.squeeze(), caption="the X-ray", width="stretch", clamp=True)
    cols[1].image(overlay(example.pixels, example.heatmap, 0.45), caption="where the model looked (Grad-CAM)", width="stretch")
    cols[2].markdown("The tour left a normal run behind: open it on the other pages.")
    cols[2].page_link("pages/evaluate.py", label="Evaluate: every metric, the threshold, the report", icon=":material/analytics:")
    cols[2].page_link("pages/predict.py", label="Predict: upload your own X-ray or DICOM", icon=":material/stethoscope:")
    st.caption(tour.DEMO_CAVEAT)


tour_run = st.session_state.get(TOUR_KEY)
if tour_run:
    from core.errors import MedImageError
    from core.runs import effective_state, read_status

    run = Path(tour_run)
    if effective_state(read_status(run)) == "completed":
        try:
            tour_story(run)
        except MedImageError as exc:
            st.error(str(exc))
    else:
        st.fragment(run_every=1)(tour_training)(run)


def active_dataset() -> None:
    """The active dataset's counts (its imports, pandas and plotly among them, wait until the text above is sent)."""
    from core.charts import class_counts_figure
    from core.dataset import imbalance_ratio
    from pages.common import active_dataset_name, load_dataset

    dataset = load_dataset(active_dataset_name())
    if dataset is None:
        return
    counts = dataset.counts()
    st.subheader("Active dataset")
    cols = st.columns(4)
    cols[0].metric("Images", f"{len(dataset.table):,}")
    cols[1].metric("Classes", len(dataset.classes))
    totals = counts.drop(index="total")["total"]
    cols[2].metric("Imbalance (largest/smallest)", f"{imbalance_ratio(dataset.table):.2f}",
                   help="How many times more images the most common class has than the rarest; 1.00 is balanced.")
    cols[3].metric("Skipped files", f"{len(dataset.skipped):,}",
                   help="Files in the folder that are not readable images; the Dataset page lists why.")
    st.markdown("Classes: " + ", ".join(f"**{c}** ({int(totals[c]):,})" for c in dataset.classes))
    left, right = st.columns([3, 2])
    left.plotly_chart(class_counts_figure(counts), width="stretch")
    right.dataframe(counts, width="stretch")


active_dataset()

st.subheader("Pages")
st.page_link("pages/dataset.py", label="Dataset: open a folder, CSV or zip; counts, sizes, samples, duplicates", icon=":material/photo_library:")
st.page_link("pages/lab.py", label="Preprocessing lab: normalisations, morphology and augmentation on one image", icon=":material/tune:")
st.page_link("pages/train.py", label="Train: a background job with live curves; stop, extend, resume", icon=":material/model_training:")
st.page_link("pages/evaluate.py", label="Evaluate: confusion matrix, ROC, threshold, calibration, report", icon=":material/analytics:")
st.page_link("pages/predict.py", label="Predict: an X-ray or DICOM with probabilities and a heat map", icon=":material/stethoscope:")

with st.expander("Glossary: the words this tool uses, in plain language"):
    from core.glossary import GLOSSARY

    st.markdown("\n".join(f"- **{term}**: {text}" for term, text in GLOSSARY.items()))

with st.expander("Device"):
    from pages.common import quick_device

    st.json(quick_device())
