"""Predict: upload X-rays (PNG/JPEG/DICOM/...), get probabilities and a Grad-CAM; ImageNet top-k; HRNet segmentation."""

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.express as px
import streamlit as st

from core import imagenet, segmentation
from core.dicom import modality_caution
from core.errors import MedImageError
from core.evaluate import predict_table, split_rows
from core.glossary import help_text
from core.gradcam import COLORMAPS, METHODS, colorize, overlay, spatial_layers
from core.image_reader import encode_png, read_header, read_image
from core.novelty import caution as novelty_caution
from core.novelty import measure_if_possible, site_summary
from core.predict import from_model, load_model_file, predict_files, release_compiled
from core.runs import list_runs
from core.similar_scores import similar_scores, unavailable
from core.window import PRESETS, apply_window, robust_window
from pages.common import explainer_for, novelty_for, predictor_for, run_labels, runs_with_models, validation_for

IMAGE_TYPES = ["png", "jpg", "jpeg", "bmp", "tif", "tiff", "webp", "gif", "dcm", "dicom"]

st.title("Predict")
classify, imagenet_tab, segment_tab = st.tabs(["Classify an X-ray", "ImageNet top-k", "Segmentation (HRNet)"], key="predict_tabs")


@st.cache_resource(show_spinner="Loading the uploaded model in Keras safe mode...", max_entries=4)
def _uploaded_predictor(digest: str, data: bytes, name: str, classes: tuple[str, ...]):
    release_compiled()
    return from_model(load_model_file(data, name), list(classes) or None, name)


def choose_predictor(prefix: str, runs: pd.DataFrame, label: str = "Model"):
    """(A Predictor from a trained run (newest completed first) or an uploaded .keras file, or None with a message;
    the run's folder, or None for an upload)."""
    kind = st.radio(label, ["Trained run", "Upload a .keras model"], horizontal=True, key=f"{prefix}_kind")
    if kind == "Trained run":
        if runs.empty:
            st.info("No trained run yet. Train one on the Train page (SmallNet on the demo set takes a few minutes), or upload a .keras model.")
            return None, None
        ordered = runs.sort_values("state", key=lambda s: s != "completed", kind="stable")["run"].tolist()
        name = st.selectbox("Run", ordered, key=f"{prefix}_run", format_func=run_labels(runs))
        path = runs.set_index("run").loc[name, "path"]
        try:
            return predictor_for(path), path
        except MedImageError as exc:
            st.error(str(exc))
            return None, None
    upload = st.file_uploader("Keras model (.keras)", type=["keras"], key=f"{prefix}_model_file")
    names = st.text_input("Class names, comma-separated (optional)", key=f"{prefix}_classes")
    if upload is None:
        st.info("Upload a Keras 3 .keras file. It is loaded in safe mode: models with Lambda layers or custom code are refused.")
        return None, None
    data = upload.getvalue()
    try:
        classes = tuple(c.strip() for c in names.split(",") if c.strip())
        return _uploaded_predictor(hashlib.sha256(data).hexdigest(), data, upload.name, classes), None
    except MedImageError as exc:
        st.error(str(exc))
        return None, None


def windowed(image, prefix: str) -> np.ndarray:
    """The image as shown: DICOM and other high-bit-depth images get window presets and sliders."""
    if image.values is None:
        return image.pixels
    window = image.meta.get("window") or {}
    options = ["From file" if window.get("source") == "DICOM window" else "Default", "Auto (0.5-99.5%)", *PRESETS, "Custom"]
    choice = st.selectbox("Window", options, key=f"{prefix}_window")
    center, width = window.get("center", 0.0), window.get("width", 1.0)
    if choice.startswith("Auto"):
        center, width = robust_window(image.values)
    elif choice in PRESETS:
        center, width = PRESETS[choice]
    lo, hi = float(np.nanmin(image.values)), float(np.nanmax(image.values))
    if choice == "Custom":
        cols = st.columns(2)
        center = cols[0].slider("Center", lo, hi, float(np.clip(center, lo, hi)), key=f"{prefix}_center")
        width = cols[1].slider("Width", 1.0, max(hi - lo, 2.0), float(np.clip(width, 1.0, max(hi - lo, 2.0))), key=f"{prefix}_width")
    return apply_window(image.values, center, width, bool(window.get("inverted")))[..., None]


def show_prediction(predictor, pixels: np.ndarray, prefix: str, cam_options: dict, reference=None, validation=None) -> None:
    """Probabilities, the label at the run's threshold, and the Grad-CAM, from one forward/backward pass; with the run's
    reference of usual images, whether this one is unusual for the model; with its validation predictions, how the
    validation images it scored alike turned out."""
    batch = predictor.prepare(pixels)[None]
    try:
        layers = spatial_layers(predictor.model)
        layer = cam_options["layer"] if cam_options["layer"] in layers else (layers[0] if layers else None)
        explainer = explainer_for(predictor, layer, cam_options["method"]) if layer else None
    except ValueError as exc:
        explainer = None
        st.caption(f"No Grad-CAM: {exc}")
    class_index = cam_options["class_index"]
    if explainer is not None and predictor.tta is False and len(predictor.models) == 1:
        result = explainer.explain(batch, class_index)
        score, heat = result.probabilities[0], result.heatmaps[0]
    else:  # an ensemble or TTA run: the score averages models/views; the map explains the first model
        score = predictor.scores(batch)[0]
        heat = explainer.explain(batch, class_index).heatmaps[0] if explainer is not None else None
    label = predictor.label(score)
    probabilities = predictor.probabilities(score)
    if predictor.head == "binary":
        st.markdown(f"### {label}")
        st.caption(f"P({predictor.classes[1]}) = {score[0]:.3f}; threshold {predictor.threshold:.3f} ({predictor.threshold_source}).")
    else:
        st.markdown(f"### {label}")
    if (alike := similar_scores(validation, predictor.classes, predictor.head, score, label)) is not None:
        if alike.borderline:  # as plainly as an unusual image: the label alone reads as sure as any other
            st.warning(alike.sentence())
        else:
            st.caption(alike.sentence(), help=help_text("borderline call"))
    if reference is not None:
        words = novelty_caution(reference, float(reference.measure(predictor.model, batch)[0]))
        if words:
            st.warning(words)
        else:
            st.caption(f"Usual for this model: as close to the images it learned from as most of {reference.source}.",
                       help=help_text("unusual image"))
    fig = px.bar(
        x=list(probabilities.values()),
        y=list(probabilities.keys()),
        orientation="h",
        range_x=[0, 1],
        labels={"x": "probability", "y": ""},
        template="plotly_white",
        text=[f"{v:.3f}" for v in probabilities.values()],
    )
    fig.update_layout(height=80 + 40 * len(probabilities), margin=dict(l=10, r=10, t=10, b=10))
    st.plotly_chart(fig, width="stretch", key=f"{prefix}_bars")
    if heat is not None:
        view = (
            overlay(pixels, heat, cam_options["alpha"], cam_options["colormap"])
            if cam_options["overlay"]
            else colorize(heat, cam_options["colormap"])
        )
        target = predictor.classes[class_index] if predictor.head != "ordinal" else "score"
        cut = "; the model looks at the centre only (border crop), so the cut borders stay blank" if explainer.crops else ""
        st.image(view, caption=f"{cam_options['method']} for {target} at layer {layer}{cut}", width="stretch")
    st.caption("Not for clinical use.")


def measure_usual(run_path: str) -> None:
    """For a run measured before the check existed: a button that reads its training and validation images once."""
    st.caption("This run has no record of which images are usual for it, so uploads are not checked for being unlike its "
               "training images (runs trained now measure it when they finish).")
    if st.button("Measure which images are usual for this run", key="pred_measure",
                 help="Reads up to 1000 training and 1000 validation images once, through the model; kept in the run folder."):
        bar = st.progress(0.0, text="Reading the run's images...")
        reason = measure_if_possible(Path(run_path), lambda message, fraction: bar.progress(min(fraction, 1.0), text=message))
        bar.empty()
        if reason:
            st.error(reason)
        else:
            st.rerun()


def predict_validation(run_path: str) -> None:
    """For a run whose validation split its present model never predicted: a button that predicts it once, so each call
    can be set beside the validation images scored like it."""
    st.caption("This run's validation split has not been predicted by its present model, so a call cannot be compared with "
               "the validation images it scored alike.")
    if st.button("Predict the validation split", key="pred_validation",
                 help="Runs the model once over the run's validation images; the table is kept in the run folder (Evaluate "
                      "uses it too)."):
        bar = st.progress(0.0, text="Predicting the validation split...")
        try:
            predict_table(Path(run_path), split_rows(Path(run_path), "val"), "val",
                          progress=lambda d, t: bar.progress(d / max(t, 1), text=f"Predicting the validation split... {d}/{t}"))
        except MedImageError as exc:
            st.error(f"The validation split could not be predicted: {exc}")
            return
        finally:
            bar.empty()
        st.rerun()


with classify:
    runs = runs_with_models(list_runs())
    predictor, run_path = choose_predictor("pred", runs)
    reference = novelty_for(run_path) if run_path else None
    validation = validation_for(run_path)
    uploads = st.file_uploader("X-ray images or DICOM files", type=IMAGE_TYPES, accept_multiple_files=True, key="pred_files")
    if run_path and reference is None:
        measure_usual(run_path)
    if run_path and predictor is not None and validation is None and not unavailable(Path(run_path)):
        predict_validation(run_path)
    if predictor is not None and uploads:
        names = [u.name for u in uploads]
        chosen = st.selectbox("Image", names, key="pred_image") if len(uploads) > 1 else names[0]
        upload = uploads[names.index(chosen)]
        try:
            header = read_header(upload.getvalue())  # the frame count without a decode: the page decodes once a rerun
            frame = None  # read_image's default: a DICOM's middle frame, another file's first
            if header.frames > 1:
                first = header.frames // 2 if header.format == "DICOM" else 0
                frame = st.slider(f"Frame (of {header.frames})", 1, header.frames, first + 1, key=f"pred_frame_{upload.name}",
                                  help="This file holds several images (a cine loop, a tomosynthesis stack); the model sees one.") - 1
            image = read_image(upload.getvalue(), frame=frame)
        except MedImageError as exc:
            st.error(f"{upload.name}: {exc}")
            image = None
        if image is not None:
            if caution := modality_caution(image.meta):
                st.warning(caution)
            # a key: the warning above comes and goes with the image, and a shifted expander would fold itself up again
            with st.expander("Grad-CAM settings", expanded=False, key="pred_cam_settings"):
                cols = st.columns(3)
                layers = spatial_layers(predictor.model)
                cam_options = {
                    "method": cols[0].radio("Method", list(METHODS), horizontal=True, key="pred_method"),
                    "layer": cols[1].selectbox(
                        "Layer", layers or ["(none)"], key="pred_layer", help="Default: the last layer with a spatial output."
                    ),
                    "class_index": predictor.classes.index(
                        cols[2].selectbox("Explain class", predictor.classes, index=len(predictor.classes) - 1, key="pred_class")
                    )
                    if predictor.head != "ordinal"
                    else 0,
                }
                cols = st.columns(3)
                cam_options["alpha"] = cols[0].slider("Opacity", 0.0, 1.0, 0.4, 0.05, key="pred_alpha")
                cam_options["colormap"] = cols[1].selectbox("Colormap", list(COLORMAPS), key="pred_cmap")
                cam_options["overlay"] = cols[2].toggle("Overlay on the image", value=True, key="pred_overlay")
            left, right = st.columns(2)
            with left:
                pixels = windowed(image, "pred")
                st.image(pixels, caption=f"{upload.name} ({image.meta.get('width')}x{image.meta.get('height')})", width="stretch")
                if image.meta.get("format") == "DICOM":
                    with st.expander("DICOM facts (no patient-identifying fields)"):
                        st.json({k: v for k, v in image.meta.items() if k not in ("window",)})
            with right:
                show_prediction(predictor, pixels, "pred_main", cam_options, reference, validation)
            if st.toggle("Compare with a second model", key="pred_compare"):
                cols = st.columns(2)
                with cols[1]:
                    second, second_path = choose_predictor("pred2", runs, "Second model")
                    if second is not None:
                        show_prediction(
                            second,
                            pixels,
                            "pred_second",
                            {**cam_options, "class_index": min(cam_options["class_index"], len(second.classes) - 1)},
                            novelty_for(second_path) if second_path else None,
                            validation_for(second_path),
                        )
                with cols[0]:
                    st.caption("Same image, same Grad-CAM settings; the left model is the one chosen above.")
        if len(uploads) > 1:
            st.subheader("All uploads")
            bar = st.progress(0.0, text="Classifying...")
            table = predict_files(
                predictor, [(u.name, u.getvalue()) for u in uploads], progress=lambda d, t: bar.progress(d / t, text=f"Classifying... {d}/{t}"),
                novelty=reference, validation=validation,
            )
            bar.empty()
            st.dataframe(table, hide_index=True, width="stretch")
            st.download_button("Download (CSV)", table.to_csv(index=False), "predictions.csv", "text/csv")
    elif predictor is not None:
        st.info("Upload one or more images (PNG, JPEG, BMP, TIFF, WebP, or DICOM, compressed too).")
    folder = st.text_input("Or classify a folder of images (batch)", key="pred_folder") if predictor is not None else ""
    if predictor is not None and folder.strip():
        root = Path(folder.strip()).expanduser()
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
        if not files:
            st.error(f"{root} is not a folder with files in it.")
        else:
            bar = st.progress(0.0, text="Classifying...")
            table = predict_files(
                predictor,
                [(str(p.relative_to(root)), str(p)) for p in files],
                progress=lambda d, t: bar.progress(d / t, text=f"Classifying... {d}/{t}"),
                novelty=reference,
                validation=validation,
            )
            bar.empty()
            if reference is not None and "unusual" in table:
                st.caption(site_summary(reference, table["unusual"].dropna().astype(bool)))
            st.dataframe(table, hide_index=True, width="stretch")
            st.download_button("Download (CSV)", table.to_csv(index=False), "folder-predictions.csv", "text/csv", key="pred_folder_csv")


@st.cache_resource(show_spinner="Loading the ImageNet classifier...", max_entries=2)
def _imagenet(name: str, weights: str):
    release_compiled()
    return imagenet.load_classifier(name, weights or None)


@st.cache_resource(show_spinner=False, max_entries=2)
def _imagenet_cam(name: str, weights: str):
    """Grad-CAM on the classifier's last feature map, compiled once per classifier."""
    from core.gradcam import GradCam

    return GradCam(_imagenet(name, weights))


@st.cache_resource(show_spinner="Loading the segmentation model...", max_entries=1)
def _segmenter(handle: str):
    release_compiled()
    return segmentation.load_segmenter(handle)


with imagenet_tab:
    st.caption("Everyday-object classifiers trained on ImageNet (seed 003): not for X-rays, but a quick check of what a backbone sees.")
    cols = st.columns([2, 3, 2])
    net = cols[0].selectbox("Classifier", list(imagenet.CLASSIFIERS), key="inet_model")
    weights_file = cols[1].text_input(
        "Local weights file (optional)",
        key="inet_weights",
        help=f"For example {imagenet.CLASSIFIERS[net].weights_file}; empty = Keras' cache or a download.",
    )
    k = cols[2].slider("Top k", 1, 20, 5, key="inet_k")
    try:
        source = imagenet.weights_source(net, weights_file.strip() or None)
    except OSError:
        source = None
    st.caption(f"Weights: {source.label}" if source else "Weights: not found in the weights folders; Keras will download "
               f"{imagenet.CLASSIFIERS[net].weights_file} (needs internet).")
    photo = st.file_uploader("Image", type=IMAGE_TYPES, key="inet_file")
    if photo is not None:
        try:
            model = _imagenet(net, weights_file.strip())
            pixels = read_image(photo.getvalue()).pixels
            top = imagenet.top_k(model, net, pixels, k)
            cols = st.columns(3)
            cols[0].image(pixels, caption=photo.name, width="stretch")
            heat = _imagenet_cam(net, weights_file.strip()).explain(imagenet.prepare(net, pixels), int(top.iloc[0]["index"])).heatmaps[0]
            cols[2].image(overlay(pixels, heat), caption=f"Grad-CAM of '{top.iloc[0]['class']}'", width="stretch")
            fig = px.bar(top, x="probability", y="class", orientation="h", template="plotly_white", text=top["probability"].map("{:.3f}".format))
            fig.update_layout(height=80 + 32 * len(top), margin=dict(l=10, r=10, t=10, b=10), yaxis_autorange="reversed")
            cols[1].plotly_chart(fig, width="stretch")
        except MedImageError as exc:
            st.error(str(exc))

with segment_tab:
    st.caption("HRNetV2-W48 trained on CamVid street scenes (seed 003): 32 classes of road, cars, people, sky...")
    cols = st.columns([3, 1, 1])
    handle = cols[0].text_input("TF Hub handle or local SavedModel folder", segmentation.DEFAULT_HANDLE, key="seg_handle")
    max_side = cols[1].number_input("Downscale to (max side, px)", 64, 4096, 512, 64, key="seg_side", help="Smaller is faster on a CPU.")
    alpha = cols[2].slider("Mask opacity", 0.0, 1.0, 0.5, 0.05, key="seg_alpha")
    photo = st.file_uploader("Street photo", type=IMAGE_TYPES, key="seg_file")
    if photo is not None:
        try:
            model = _segmenter(handle.strip())
            with st.spinner("Segmenting..."):
                rgb, probs = segmentation.run_inference(model, read_image(photo.getvalue()).pixels, int(max_side))
            classes = segmentation.class_map(probs)
            mask = segmentation.colour_mask(classes)
            blended = segmentation.blend(rgb, mask, alpha)
            cols = st.columns(3)
            cols[0].image(rgb, caption="input", width="stretch")
            cols[1].image(mask, caption="mask", width="stretch")
            cols[2].image(blended, caption="overlay", width="stretch")
            shares = segmentation.class_shares(classes)
            cols = st.columns([2, 3])
            cols[0].dataframe(
                shares.style.format({"share": "{:.1%}"}).map(lambda c: f"background-color: {c}", subset=["colour"]),
                hide_index=True,
                width="stretch",
            )
            fig = px.bar(
                shares,
                x="share",
                y="class",
                orientation="h",
                color="class",
                template="plotly_white",
                color_discrete_map=dict(zip(shares["class"], shares["colour"], strict=True)),
            )
            fig.update_layout(showlegend=False, height=80 + 24 * len(shares), margin=dict(l=10, r=10, t=10, b=10), yaxis_autorange="reversed")
            cols[1].plotly_chart(fig, width="stretch")
            which = st.selectbox(
                "Probability map of class", segmentation.NAMES, index=segmentation.NAMES.index(shares["class"][0]), key="seg_class"
            )
            st.image(colorize(probs[..., segmentation.NAMES.index(which)], "inferno"), caption=f"P({which}) per pixel", width=480)
            cols = st.columns(2)
            cols[0].download_button("Mask (PNG)", encode_png(mask), "mask.png", "image/png")
            cols[1].download_button("Overlay (PNG)", encode_png(blended), "overlay.png", "image/png")
        except MedImageError as exc:
            st.error(str(exc))
