"""Dataset: choose the source the other pages use, and see what is in it."""

import pandas as pd
import streamlit as st

from core.charts import class_counts_figure
from core.dataset import DEMO, size_stats, skipped_summary, store_upload
from core.errors import MedImageError
from pages.common import DATASET_KEY, active_dataset_name, load_dataset

st.title("Dataset")

kind = st.radio("Source", ["Demo set", "Folder", "CSV file", "Zip upload"], horizontal=True)
new_source = None
if kind == "Demo set":
    st.caption("Synthetic chest-X-ray phantoms (NORMAL / PNEUMONIA), generated offline on first use.")
    if st.button("Use the demo set"):
        new_source = DEMO
elif kind in ("Folder", "CSV file"):
    hint = "/data/chest_xray/train" if kind == "Folder" else "/data/labels.csv"
    path = st.text_input(
        "Path on this machine", placeholder=hint,
        help="A folder of class folders, a folder with train/val/test folders, or a CSV of path,label[,split].",
    )
    if st.button("Open", disabled=not path.strip()):
        new_source = path.strip()
else:
    upload = st.file_uploader("Zip of class folders (or of train/val/test folders)", type=["zip"])
    if upload is not None and st.button("Open the zip"):
        try:
            new_source = str(store_upload(upload.getvalue(), upload.name))
        except MedImageError as exc:
            st.error(str(exc))

if new_source is not None and load_dataset(new_source) is not None:
    st.session_state[DATASET_KEY] = new_source
elif new_source is not None:
    st.info("The previous dataset stays active until a source opens cleanly.")

source = active_dataset_name()
dataset = load_dataset(source)
if dataset is None:
    st.stop()

st.subheader(f"Active: {'demo set' if source == DEMO else source}")
split_note = "from the source's folders" if dataset.split_from_source else "stratified 70/15/15, seed 0"
st.caption(f"{len(dataset.table):,} images · {len(dataset.classes)} classes · split {split_note}")
counts = dataset.counts()
left, right = st.columns([3, 2])
left.plotly_chart(class_counts_figure(counts), width="stretch")
right.dataframe(counts, width="stretch")

st.subheader("Image sizes")
stats = pd.DataFrame(size_stats(dataset.table)).T
st.dataframe(stats, width="stretch")
cols = st.columns(2)
cols[0].markdown("**Formats**")
cols[0].dataframe(dataset.table["format"].value_counts().rename("images"), width="stretch")
cols[1].markdown("**Channels**")
cols[1].dataframe(dataset.table["channels"].value_counts().rename("images"), width="stretch")

st.subheader("Skipped files")
summary = skipped_summary(dataset.skipped)
if not summary:
    st.success("Every file found was a readable image.")
else:
    st.dataframe(pd.Series(summary, name="files").rename_axis("reason"), width="stretch")
    with st.expander(f"All {len(dataset.skipped):,} skipped files"):
        st.dataframe(dataset.skipped, width="stretch", hide_index=True)
