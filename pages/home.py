"""Home: what the tool does, the active dataset at a glance, and where to go next."""

import streamlit as st

from core.charts import class_counts_figure
from core.dataset import imbalance_ratio
from pages.common import active_dataset_name, device, load_dataset

st.title("MedImage Studio")
st.markdown(
    "Explore a medical image dataset, train a classifier in the background while watching its "
    "curves, evaluate it the way clinicians need, and run it on an uploaded X-ray or DICOM with "
    "an explanation of what it looked at. Everything runs on this machine; nothing is uploaded "
    "anywhere. **Not for clinical use.**"
)

source = active_dataset_name()
dataset = load_dataset(source)
if dataset is not None:
    counts = dataset.counts()
    st.subheader("Active dataset")
    cols = st.columns(4)
    cols[0].metric("Images", f"{len(dataset.table):,}")
    cols[1].metric("Classes", len(dataset.classes))
    totals = counts.drop(index="total")["total"]
    cols[2].metric("Imbalance (largest/smallest)", f"{imbalance_ratio(dataset.table):.2f}")
    cols[3].metric("Skipped files", f"{len(dataset.skipped):,}")
    st.markdown("Classes: " + ", ".join(f"**{c}** ({int(totals[c]):,})" for c in dataset.classes))
    left, right = st.columns([3, 2])
    left.plotly_chart(class_counts_figure(counts), width="stretch")
    right.dataframe(counts, width="stretch")

st.subheader("Pages")
st.page_link("pages/dataset.py", label="Dataset: open a folder, CSV or zip; counts, sizes, skipped files", icon=":material/photo_library:")
st.page_link("pages/lab.py", label="Preprocessing lab: normalisations, morphology and augmentation on one image", icon=":material/tune:")
st.page_link("pages/train.py", label="Train: a background job with live curves; stop, extend, resume", icon=":material/model_training:")

with st.expander("Device"):
    info = device()
    st.json(info)
