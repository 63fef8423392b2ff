"""Preprocessing lab: normalisations, morphology and the training augmentation on one image of the active dataset."""

import numpy as np
import streamlit as st

from core import morphology
from core.augment import BLENDS, FLIP_MODES, AugmentConfig, augment_preview, blend_partners, blend_preview
from core.charts import histogram_figure
from core.errors import ImageReadError, MedImageError
from core.image_reader import read_image
from core.normalize import METHODS, normalize, to_display
from pages.common import active_dataset_name, load_dataset, thumbnail
from pages.flow import end_page

st.title("Preprocessing lab")

dataset = load_dataset(active_dataset_name())
if dataset is None:
    end_page()

left, right = st.columns(2)
label = left.selectbox("Class", dataset.classes)
paths = dataset.table.loc[dataset.table["label"] == label, "path"].tolist()
index = right.number_input(f"Image (0 to {len(paths) - 1})", 0, len(paths) - 1, 0)
try:
    pixels = read_image(paths[int(index)]).pixels
except ImageReadError as exc:
    st.error(str(exc))
    end_page()
st.caption(paths[int(index)])

normalisation, morph, augmentation = st.tabs(["Normalisation", "Threshold and morphology", "Augmentation"], key="lab_tabs")

with normalisation:
    method = st.selectbox("Method", list(METHODS), index=list(METHODS).index("CLAHE"), key="lab_method")
    result = normalize(pixels, method)
    cols = st.columns(2)
    cols[0].image(pixels, caption="original", width="stretch", clamp=True)
    cols[1].image(to_display(result), caption=f"{method} (shown rescaled to 0-255)", width="stretch")
    st.caption(f"result range {float(result.min()):.3f} to {float(result.max()):.3f}, mean {float(result.mean()):.3f}")
    st.plotly_chart(histogram_figure(pixels, result), width="stretch")

with morph:
    cols = st.columns(5)
    channel_name = cols[0].selectbox("Channel", morphology.CHANNELS)
    use_otsu = cols[1].checkbox("Otsu", value=True, key="lab_otsu")
    value = cols[1].slider("Threshold", 0, 255, 128, disabled=use_otsu, key="lab_threshold")
    operation = cols[2].selectbox("Operation", list(morphology.OPERATIONS), key="lab_operation")
    shape = cols[3].selectbox("Element", ["disk", "square"])
    radius = cols[4].slider("Radius", 0, 15, 3)
    gray = morphology.channel(pixels, channel_name)
    mask, used = morphology.threshold(gray, None if use_otsu else value)
    st.caption(f"threshold used: {used:.1f}")
    cols = st.columns(4)
    cols[0].image(mask.astype(np.uint8) * 255, caption="mask", width="stretch")
    cols[1].image(morphology.apply(mask, operation, shape, radius).astype(np.uint8) * 255, caption=f"mask, {operation}", width="stretch")
    cols[2].image(gray, caption=f"{channel_name}", width="stretch")
    cols[3].image(morphology.apply(gray, operation, shape, radius), caption=f"{channel_name}, {operation}", width="stretch")

with augmentation:
    st.caption("Exactly the Keras preprocessing layers the training pipeline applies to the training split.")
    default = AugmentConfig()
    cols = st.columns(4)
    flip = cols[0].selectbox("Flip", FLIP_MODES, index=FLIP_MODES.index(default.flip), key="aug_flip")
    rotation = cols[1].slider("Rotation (turns)", 0.0, 0.25, default.rotation, 0.01, key="aug_rotation")
    translation = cols[2].slider("Translation", 0.0, 0.3, default.translation, 0.01, key="aug_translation")
    zoom = cols[3].slider("Zoom", 0.0, 0.5, default.zoom, 0.01, key="aug_zoom")
    cols = st.columns(4)
    shear = cols[0].slider("Shear", 0.0, 0.5, default.shear, 0.01, key="aug_shear")
    contrast = cols[1].slider("Contrast", 0.0, 0.9, default.contrast, 0.05, key="aug_contrast")
    brightness = cols[2].slider("Brightness", 0.0, 0.9, default.brightness, 0.05, key="aug_brightness")
    gamma = cols[3].slider("Gamma (exposure)", 0.0, 0.7, default.gamma, 0.05, key="aug_gamma")
    cols = st.columns(4)
    noise = cols[0].slider("Noise", 0.0, 0.2, default.noise, 0.01, key="aug_noise")
    aug_seed = cols[1].number_input("Seed", 0, 10**6, 0, key="aug_seed")
    config = AugmentConfig(flip, rotation, translation, zoom, shear, contrast, brightness, gamma, noise)
    small = read_image(paths[int(index)], max_side=256).pixels
    grid = augment_preview(small, config, n=9, seed=int(aug_seed))
    for row in range(3):
        cols = st.columns(3)
        for col, img in zip(cols, grid[row * 3 : row * 3 + 3], strict=True):
            col.image(img, width="stretch")

    st.markdown("**Blending with another class's images** (the Train form's mixup and CutMix)")
    try:
        other, other_paths = blend_partners(dataset.table, label)
    except MedImageError as exc:
        st.caption(str(exc))
    else:
        cols = st.columns(3)
        kind = cols[0].selectbox("Blend", BLENDS, format_func={"mixup": "mixup", "cutmix": "CutMix"}.get, key="blend_kind")
        strength = cols[1].slider("Strength (mixup alpha, CutMix factor)", 0.05, 1.0, 0.2 if kind == "mixup" else 1.0, 0.05,
                                  key=f"blend_strength_{kind}")
        blend_seed = cols[2].number_input("Seed", 0, 10**6, 0, key="blend_seed")
        partners = [img for img in (thumbnail(path, 256) for path in other_paths) if img is not None]  # cached reads
        st.caption(f"As in training, each copy of this image is blended with a random member of a batch of copies and "
                   f"{len(partners)} {other} images, and its target says how much {other} it holds; a copy that meets a "
                   f"copy of itself stays as it is.")
        if partners:
            blends = blend_preview(small, partners, kind, strength, seed=int(blend_seed))
            cols = st.columns(3)
            for i, (img, share) in enumerate(blends):
                cols[i % 3].image(img, caption=f"target: {share:.0%} {other}", width="stretch")
