"""Dataset: choose the source the other pages use, see what is in it, balance and split it, find leakage."""

import pandas as pd
import streamlit as st

from core import morphology
from core.charts import class_counts_figure, size_histograms_figure, size_scatter_figure
from core.dataset import DEMO, KAGGLE_PREFIX, class_counts, imbalance_ratio, prepare, sample_rows, size_stats, skipped_summary, store_upload
from core.dataset_store import SAVED_PREFIX, list_definitions, save_definition
from core.errors import MedImageError
from core.splits import class_weights
from pages.common import (
    DATASET_KEY,
    active_dataset_name,
    duplicate_pairs,
    load_dataset,
    paged_table,
    patients_split,
    source_label,
    thumbnail,
)
from pages.flow import end_page

st.title("Dataset")

# ---- source -------------------------------------------------------------------------------------
kind = st.radio("Source", ["Demo set", "Folder", "CSV file", "Zip upload", "Kaggle", "Saved dataset"], horizontal=True)
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
elif kind == "Zip upload":
    upload = st.file_uploader("Zip of class folders (or of train/val/test folders)", type=["zip"])
    if upload is not None and st.button("Open the zip"):
        try:
            new_source = str(store_upload(upload.getvalue(), upload.name))
        except MedImageError as exc:
            st.error(str(exc))
elif kind == "Kaggle":
    handle = st.text_input("Kaggle dataset handle", placeholder="paultimothymooney/chest-xray-pneumonia")
    if st.button("Download and open", disabled=not handle.strip()):
        new_source = KAGGLE_PREFIX + handle.strip()
else:
    saved = [d for d in list_definitions() if not d.get("error")]
    if not saved:
        st.info("No saved datasets yet: open a source, then save it under 'Balance and split'.")
    else:
        name = st.selectbox("Saved dataset", [d["name"] for d in saved])
        if st.button("Open the saved dataset"):
            new_source = SAVED_PREFIX + name

if new_source is not None and load_dataset(new_source) is not None:
    st.session_state[DATASET_KEY] = new_source
elif new_source is not None:
    st.info("The previous dataset stays active until a source opens cleanly.")

source = active_dataset_name()
dataset = load_dataset(source)
if dataset is None:
    end_page()

st.subheader(f"Active: {'demo set' if source == DEMO else source_label(source)}")
shared = patients_split(source)  # Kermany-style names: splits keep each patient on one side
split_note = ("from the source" if dataset.split_from_source
              else f"{'by patient (ids in the file names), ' if shared is not None else 'stratified '}70/15/15, seed 0")
st.caption(f"{len(dataset.table):,} images · {len(dataset.classes)} classes · split {split_note}")
overview, samples, balance, leakage = st.tabs(["Overview", "Samples", "Balance and split", "Duplicates and leakage"],
                                             key="dataset_tabs")  # a key: a rerun that draws more above must not remount them

# ---- overview -----------------------------------------------------------------------------------
with overview:
    counts = dataset.counts()
    cols = st.columns(4)
    cols[0].metric("Images", f"{len(dataset.table):,}")
    cols[1].metric("Classes", len(dataset.classes))
    cols[2].metric("Imbalance (largest/smallest)", f"{imbalance_ratio(dataset.table):.2f}")
    cols[3].metric("Skipped files", f"{len(dataset.skipped):,}")
    left, right = st.columns([3, 2])
    left.plotly_chart(class_counts_figure(counts), width="stretch")
    right.dataframe(counts, width="stretch")

    st.markdown("**Image sizes**")
    table = dataset.table
    stats = size_stats(table)
    w, h = stats["width"], stats["height"]
    st.caption(f"width {w['min']:.0f}-{w['max']:.0f} px (median {w['median']:.0f}), "
               f"height {h['min']:.0f}-{h['max']:.0f} px (median {h['median']:.0f})")
    st.dataframe(pd.DataFrame(stats).T, width="stretch")
    cols = st.columns(3)
    cols[0].dataframe(table["format"].value_counts().rename("images"), width="stretch")
    cols[1].dataframe(table["channels"].value_counts().rename("images").rename_axis("channels"), width="stretch")
    cols[2].dataframe(table["mode"].value_counts().rename("images").rename_axis("mode"), width="stretch")
    st.plotly_chart(size_scatter_figure(table), width="stretch")
    st.plotly_chart(size_histograms_figure(table), width="stretch")

    st.markdown("**Skipped files**")
    summary = skipped_summary(dataset.skipped)
    if not summary:
        st.success("Every file found was a readable image.")
    else:
        st.dataframe(pd.Series(summary, name="files").rename_axis("reason"), width="stretch")
        with st.expander(f"All {len(dataset.skipped):,} skipped files"):
            paged_table(dataset.skipped, key="skipped_page")

# ---- samples ------------------------------------------------------------------------------------
with samples:
    cols = st.columns([2, 1])
    per_class = cols[0].slider("Images per class", 1, 8, 4, key="samples_per_class")
    if cols[1].button("Shuffle", key="samples_shuffle"):
        st.session_state["samples_seed"] = st.session_state.get("samples_seed", 0) + 1
    rows = sample_rows(dataset.table, per_class, seed=st.session_state.get("samples_seed", 0))
    for label, group in rows.groupby("label", sort=False):
        st.markdown(f"**{label}**")
        grid = st.columns(per_class)
        for col, path in zip(grid, group["path"], strict=False):
            thumb = thumbnail(path)
            if thumb is None:
                col.warning("unreadable")
            else:
                col.image(thumb, caption=str(label), width="stretch")

    st.markdown("**Channel viewer**")
    cols = st.columns([3, 1])
    chosen = cols[0].selectbox("Image", rows["path"].tolist(), format_func=lambda p: p.rsplit("/", 1)[-1], key="channel_image")
    which = cols[1].radio("Channel", morphology.CHANNELS, horizontal=True, key="channel_name")
    pixels = thumbnail(chosen, 512)
    if pixels is not None:
        st.image(morphology.channel(pixels, which), caption=f"{which} channel of {chosen}", width=384)

# ---- balance and split --------------------------------------------------------------------------
def balance_and_split() -> None:
    """Trim, drop and re-split the active dataset, and save the result under a name."""
    cols = st.columns(4)
    max_per = cols[0].number_input("Max per class (0 = all)", 0, 10**7, 0, step=50, key="trim_max")
    min_per = cols[1].number_input("Drop classes under (0 = keep all)", 0, 10**7, 0, step=10, key="trim_min")
    resplit = cols[2].checkbox("Re-split", value=not dataset.split_from_source, disabled=not dataset.split_from_source,
                               help="Keep the source's train/val/test folders, or make a new stratified split (by patient "
                                    "where the file names carry patient ids).", key="resplit")
    seed = cols[3].number_input("Seed", 0, 10**6, 0, key="split_seed")
    cols = st.columns(2)
    train_f = cols[0].slider("Train fraction", 0.1, 0.95, 0.70, 0.05, key="train_fraction")
    val_f = cols[1].slider("Validation fraction", 0.0, round(1 - train_f, 2), min(0.15, round(1 - train_f, 2)), 0.05, key="val_fraction")
    fractions = (train_f, val_f, round(1 - train_f - val_f, 4))
    try:
        prepared, dropped = prepare(dataset, max_per or None, min_per or None, resplit, fractions, int(seed))
    except MedImageError as exc:
        st.error(str(exc))
        return  # this tab only: the leakage tab still draws
    if dropped:
        st.warning(f"Dropped classes: {', '.join(dropped)}")
    left, right = st.columns(2)
    left.markdown("**Before**")
    left.dataframe(class_counts(dataset.table), width="stretch")
    right.markdown("**After**")
    right.dataframe(class_counts(prepared.table), width="stretch")
    train = prepared.table[prepared.table["split"] == "train"]
    if len(train):
        st.markdown("**Class weights** (inverse frequency on the training split: n / (classes x count))")
        st.dataframe(pd.Series(class_weights(train["label"]), name="weight").rename_axis("class"), width="stretch")
    cols = st.columns([3, 1])
    name = cols[0].text_input("Save as", placeholder="pneumonia-v1", key="save_name")
    if cols[1].button("Save dataset", disabled=not name.strip(), key="save_button"):
        settings = {"max_per_class": max_per or None, "min_per_class": min_per or None, "resplit": resplit,
                    "fractions": fractions, "seed": int(seed)}
        try:
            save_definition(name, prepared, settings)
            st.success(f"Saved '{name.strip()}': the Train and Evaluate pages list it.")
        except MedImageError as exc:
            st.error(str(exc))
    saved = list_definitions()
    if saved:
        st.dataframe(pd.DataFrame(saved)[["name", "images", "classes", "created", "error"]], hide_index=True, width="stretch")


with balance:
    balance_and_split()

# ---- duplicates and leakage ---------------------------------------------------------------------
with leakage:
    st.caption("Exact copies (same bytes) and near copies (256-bit perceptual hash) within and across splits. "
               "A test image with a twin in train makes the test score flatter the model.")
    if shared is not None:  # the other leak: one child's images on both sides, which no image comparison sees
        (st.warning if any(shared.values()) else st.caption)(
            f"Patients (ids in the file names) with images in both train and test: {shared['train_test']:,}; in both train "
            f"and validation: {shared['train_val']:,}" + (". Re-split under 'Balance and split' to keep each patient on one "
                                                          "side." if any(shared.values()) else "."))
    threshold = st.slider("Near-duplicate threshold (bits of 256)", 0, 40, 10, key="dup_threshold")
    if st.button("Find duplicates", key="dup_button") or st.session_state.get("dup_done") == (source, threshold):
        pairs, summary = duplicate_pairs(source, threshold)
        st.session_state["dup_done"] = (source, threshold)
        cols = st.columns(5)
        cols[0].metric("Exact pairs", summary.exact_pairs)
        cols[1].metric("Near pairs", summary.near_pairs)
        cols[2].metric("Cross-split pairs", summary.cross_split_pairs)
        cols[3].metric("Test images with a twin in train", summary.test_with_train_twin)
        cols[4].metric("Pairs with different labels", summary.conflicting_labels)
        if len(pairs) == 0:
            st.success("No duplicates at this threshold.")
        else:
            paged_table(pairs, key="pairs_page")
            for pair in pairs.head(6).itertuples(index=False):
                sides = ((pair.path_a, pair.label_a, pair.split_a), (pair.path_b, pair.label_b, pair.split_b))
                for col, (path, label, split) in zip(st.columns(2), sides, strict=True):
                    thumb = thumbnail(path)
                    if thumb is not None:
                        col.image(thumb, caption=f"{split} · {label} · {path.rsplit('/', 1)[-1]}", width=220)
                st.caption(f"{pair.kind}, {pair.distance} bits apart" + (" · crosses splits" if pair.cross_split else ""))
