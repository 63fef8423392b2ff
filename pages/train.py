"""Train: start a job (a separate process), watch it live, and steer it."""

from pathlib import Path

import streamlit as st

from core import jobs
from core.catalog import BACKBONES, FREEZE_MODES, INTENSITY, MAX_CROP, MODEL_NAMES, native_sizes_sentence
from core.charts import batch_curves_figure, generalisation_curves_figure, runs_overlay_figure, training_curves_figure
from core.dataset_store import SAVED_PREFIX, list_definitions
from core.errors import MedImageError
from core.external import EXTERNAL_FILE
from core.glossary import help_text
from core.models import build_model
from core.recipes import RECIPE_EPOCHS, create_recipe_run, recipe_config, weights_found
from core.runs import (
    FINAL_STATES,
    create_run,
    delete_run,
    derived_from,
    effective_state,
    list_runs,
    read_metrics,
    read_status,
    request,
    settings_that_differ,
)
from core.train import blend_of, create_run_with_rows, lr_sweep_configs, make_config, overfit_preset, precision_for
from pages.common import active_dataset_name, device, load_dataset, run_labels, source_label
from pages.flow import end_page

st.title("Train")

# ---- the form -----------------------------------------------------------------------------------
sources = [active_dataset_name()] + [SAVED_PREFIX + d["name"] for d in list_definitions() if not d.get("error")]
PRECISIONS = {"auto": "auto: {auto} here", "on": "mixed (16-bit)", "off": "float32"}
RECIPE_CHOICES = {"Custom: the settings below": None, "X-ray recipe: ImageNet MobileNetV2, whole network (needs its weights file)": "xray",
                  "X-ray recipe, from scratch (works offline)": "xray-scratch"}
active = load_dataset(active_dataset_name())
two_classes = active is not None and len(active.classes) == 2
recipe_label = st.selectbox(
    "Recipe", list(RECIPE_CHOICES), index=(1 if weights_found("xray") else 2) if two_classes else 0, key="train_recipe",
    help="The X-ray recipes: patient-grouped split, augmentation, label smoothing, the threshold chosen on validation and "
         "saved, mirror test-time augmentation. 'xray' trains a whole ImageNet MobileNetV2 (the one that held up best on "
         "another hospital's X-rays); 'from scratch' trains xraynet with in-model histogram equalisation and needs no "
         "weights file. A recipe sets everything but the dataset and epochs.",
)
recipe = RECIPE_CHOICES[recipe_label]
# With a recipe, the greyed-out fields show what it will use (keys of their own: a widget's value follows its key)
shown = recipe_config(recipe, "") if recipe else make_config("", image_size=128, batch_size=16)


def key(name: str) -> str:
    return f"{name}_{recipe}" if recipe else name


INTENSITY_LABELS = {"rescale": "as is", "standardize": "standardise", "equalize": "equalise"}
ALPHAS = [1.0, 0.75, 0.5, 0.35, 0.25, 1.3, 1.4]
WEIGHT_CHOICES = ["none", "imagenet", "local file"]
with st.form("train_form"):
    cols = st.columns(3)
    data = cols[0].selectbox("Dataset", list(dict.fromkeys(sources)), format_func=source_label, key="train_data",
                           help="The images to learn from: the active dataset, or one saved on the Dataset page with its own split.")
    model_name = cols[1].selectbox("Model", MODEL_NAMES, index=MODEL_NAMES.index(shown.model.name), disabled=bool(recipe),
                                   key=key("train_model"),
                                   help="SmallNet and the other small models learn from scratch in grayscale; the backbones "
                                        "(VGG16, ResNet50, ...) start from what they learned on millions of everyday photos (ImageNet).")
    weights = cols[2].selectbox("Weights", WEIGHT_CHOICES, index=WEIGHT_CHOICES.index(shown.model.weights), disabled=bool(recipe),
                                key=key("train_weights"),
                                help="What a backbone starts from: 'imagenet' reuses what it learned on everyday photos "
                                     "(a download, or the file in ~/.keras/models); 'none' starts from random numbers.")
    cols = st.columns(4)
    image_size = cols[0].number_input("Image size", 32, 512, shown.model.image_size, 16, disabled=bool(recipe), key=key("train_size"),
                                      help=f'{help_text("image size")} {native_sizes_sentence()}')
    epochs = cols[1].number_input("Epochs", 1, 500, RECIPE_EPOCHS[recipe] if recipe else 10, key=key("train_epochs"), help=help_text("epoch"))
    batch_size = cols[2].number_input("Batch size", 1, 512, shown.pipeline.batch_size, disabled=bool(recipe), key=key("train_batch"),
                                      help=help_text("batch size"))
    lr = cols[3].number_input("Learning rate", 1e-6, 1.0, shown.learning_rate, format="%.5f", disabled=bool(recipe), key=key("train_lr"),
                             help=help_text("learning rate"))
    cols = st.columns([3, 3, 2, 2])
    alpha = cols[0].selectbox("Width (alpha, MobileNet / MobileNetV2 only)", ALPHAS, index=ALPHAS.index(shown.model.alpha),
                              disabled=bool(recipe), key=key("train_alpha"),
                              help="Thinner networks (smaller alpha) are faster and smaller. ImageNet weights exist for "
                              "MobileNet at 0.25/0.5/0.75/1.0 and MobileNetV2 at 0.35/0.5/0.75/1.0/1.3/1.4.")
    crop = cols[1].number_input("Border crop (share of each side, 0 = off)", 0.0, MAX_CROP, shown.model.crop, 0.05, disabled=bool(recipe),
                                key=key("train_crop"), help=help_text("border crop"))
    cutmix = cols[2].number_input("CutMix (factor, 0 = off)", 0.0, 1.0, float(shown.cutmix), 0.1, disabled=bool(recipe),
                                  key=key("train_cutmix"), help=help_text("CutMix"))
    cosine = cols[3].checkbox("Cosine LR schedule", value=shown.cosine, disabled=bool(recipe), key=key("train_cosine"),
                              help=help_text("cosine schedule"))
    cols = st.columns([3, 1])
    weights_file = cols[0].text_input("Local weights file (for 'local file')", disabled=bool(recipe), key="train_weights_file",
                                      help="A .h5 or .keras weights file on this machine, for when there is no internet.")
    intensity = cols[1].selectbox("Intensity per image", INTENSITY, index=INTENSITY.index(shown.model.intensity), disabled=bool(recipe),
                                  format_func=INTENSITY_LABELS.get, key=key("train_intensity"), help=help_text("intensity"))
    cols = st.columns(4)
    augment_on = cols[0].checkbox("Augmentation (as previewed in the lab)", value=shown.augment is not None, disabled=bool(recipe),
                                  key=key("train_augment"), help=help_text("augmentation"))
    class_weighting = cols[1].checkbox("Class weights", value=shown.class_weighting, disabled=bool(recipe), key=key("train_class_weights"),
                                       help=help_text("class weights"))
    ema_epochs = cols[2].number_input("Weight averaging (epochs)", 0.0, 100.0, float(shown.ema_epochs), 1.0, disabled=bool(recipe),
                                      key=key("train_ema"), help=help_text("weight averaging"))
    mixup = cols[3].number_input("Mixup (alpha, 0 = off)", 0.0, 1.0, float(shown.mixup), 0.1, disabled=bool(recipe), key=key("train_mixup"),
                                 help=help_text("mixup"))
    cols = st.columns(4)  # a backbone's phases: what trains first, then what fine-tuning adds, and at which LR
    freeze = cols[0].selectbox("Backbone training", FREEZE_MODES, index=FREEZE_MODES.index(shown.model.freeze), disabled=bool(recipe),
                               key=key("train_freeze"),
                               help="How much of a backbone learns: only the new last layer (feature_extraction, fast), also its last "
                                    "layers (fine_tune), or all of it (full, slow, needs more images).")
    fine_tune_epochs = cols[1].number_input("Then fine-tune (epochs, 0 = off)", 0, 500, shown.fine_tune_epochs, disabled=bool(recipe),
                                            key=key("train_fine_tune_epochs"), help=help_text("fine-tuning"))
    fine_tune_layers = cols[2].number_input("Layers to fine-tune (0 = all)", 0, 1000, shown.model.fine_tune_layers, disabled=bool(recipe),
                                            key=key("train_fine_tune_layers"), help=help_text("fine-tuning"))
    fine_tune_lr = cols[3].number_input("Fine-tuning learning rate", 1e-7, 1.0, shown.fine_tune_lr, format="%.6f", disabled=bool(recipe),
                                        key=key("train_fine_tune_lr"), help="Usually 10x lower than the first phase's: large steps "
                                        "would undo what the backbone learned on ImageNet.")
    cols = st.columns([2, 1, 1])
    preset = cols[0].radio("Kind of run", ["Normal", "Overfit 8 per class (sanity)", "LR sweep 0.1 / 0.01 / 0.001"],
                           horizontal=True, disabled=bool(recipe), key="train_preset",
                           help="Normal training; a sanity check that the model can memorise 8 images per class (if it cannot, "
                                "something is broken); or three runs with different learning rates to compare.")
    folds = cols[1].number_input("Cross-validation folds (0 = off)", 0, 10, 0, disabled=bool(recipe), key="train_folds",
                            help="Train K models, each tested on a different K-th of the images, for a more reliable score on small datasets.")
    precision = cols[2].selectbox(
        "Precision", list(PRECISIONS), key="train_precision",
        format_func=lambda p: PRECISIONS[p].format(auto=precision_for("auto", model_name, device())),
        help="Mixed precision computes in 16 bits and keeps the weights in float32: float16 on a GPU with tensor cores, "
             "bfloat16 on a CPU that computes it natively (1.2x to 2.8x faster in our benchmarks). Auto picks what this machine "
             "does well for the chosen network: on a CPU, MobileNets and EfficientNets stay float32, which is faster for them.",
    )
    cols = st.columns([1, 3])
    seed = cols[0].number_input("Seed", 0, 2**31 - 1, 0, key="train_seed", help=help_text("seed"))
    deterministic = cols[1].checkbox("Reproducible: the same settings and seed give the same model", key="train_deterministic",
                                     help=help_text("reproducible"))
    external_text = st.text_area(
        "External sets to watch (one folder per line, monitor only)", key="train_external", height=68,
        help="Images from another hospital or scanner, in class folders: scored after every epoch and shown beside "
             "validation, never learned from, and never used to pick the best epoch, stop early, change the learning rate "
             "or choose the threshold.")
    submitted = st.form_submit_button("Start training", type="primary",
                                      help="Starts a background job: you can leave this page, it keeps training.")

def external_sources(text: str) -> tuple[str, ...]:
    """The external folders typed in the form, each opened once now so a wrong path is a message, not a failed job."""
    sources = tuple(line.strip() for line in text.splitlines() if line.strip())
    for source in sources:
        if load_dataset(source) is None:  # the message is on the page
            end_page()
    return sources


if submitted and recipe:
    try:
        if not weights_found(recipe):
            build_model(recipe_config(recipe, data).model)  # offline without weights: the message now, not a failed job
        run = create_recipe_run(recipe, data, seed=int(seed), epochs=int(epochs), mixed_precision=precision,
                                external=external_sources(external_text), deterministic=deterministic)
        state = jobs.start(run)
        st.success(f"Started {run.name} ({recipe} recipe)" if state == "running" else f"Queued {run.name}: it starts when a slot frees.")
        st.session_state["train_run"] = run.name  # show the new run, not the one viewed before
    except MedImageError as exc:
        st.error(str(exc))
elif submitted:
    external = external_sources(external_text)
    try:
        config = make_config(
            data, model_name, int(image_size), int(epochs), int(batch_size), augment=augment_on,
            weights=weights_file.strip() if weights == "local file" else weights, freeze=freeze,
            learning_rate=float(lr), class_weighting=class_weighting, folds=int(folds), mixed_precision=precision, alpha=float(alpha),
            external=external, ema_epochs=float(ema_epochs), mixup=float(mixup), cutmix=float(cutmix), cosine=cosine, crop=float(crop),
            intensity=intensity, fine_tune_epochs=int(fine_tune_epochs), fine_tune_layers=int(fine_tune_layers),
            fine_tune_lr=float(fine_tune_lr), seed=int(seed), deterministic=deterministic,
        )
        model = config.model
        chosen = load_dataset(data)  # cached: the class count says whether the images can be blended
        blend_of(config, len(chosen.classes) if chosen else None)  # both blends, or 3+ classes: the message here, not a failed job
        build_model(model)  # fail here, with the message (a missing weights file, an image too small), rather than in the job
        if preset.startswith("Overfit"):
            config, rows = overfit_preset(data, base=config)
            started = [create_run_with_rows(config, rows)]
        elif preset.startswith("LR sweep"):
            started = [create_run(c.to_dict()) for c in lr_sweep_configs(config)]
        else:
            started = [create_run(config.to_dict())]
        for run in started:
            state = jobs.start(run)
            st.success(f"Started {run.name}" if state == "running" else f"Queued {run.name}: it starts when a slot frees.")
        st.session_state["train_run"] = started[0].name
    except MedImageError as exc:  # offline weights, bad dataset, ... : the message says what to do
        st.error(str(exc))
    if model_name in BACKBONES and weights == "none":
        st.caption("Training a backbone from scratch on a small dataset rarely beats SmallNet.")

with st.expander("ImageNet weights on this machine"):
    from core.weights import available, weights_dirs

    found = available()
    st.caption("Looked up by their official names before any download, in: " + ", ".join(str(d) for d in weights_dirs())
               + ". Set MEDIMAGE_WEIGHTS_DIR to add a folder.")
    st.markdown("\n".join(f"- {info.label}" for info in found) if found else "No weight files found: ImageNet weights will be downloaded "
                "(needs internet), or copy the files into one of those folders.")

# ---- runs and the live view ---------------------------------------------------------------------
runs = list_runs()
if runs.empty:
    st.info("No runs yet. Start one above: it trains in the background, and its progress and curves appear here.")
    end_page()

names = runs["run"].tolist()
if st.session_state.get("train_run") not in names:  # first visit, or the selected run was deleted: the newest
    st.session_state["train_run"] = names[0]
selected = st.selectbox("Run", names, key="train_run", format_func=run_labels(runs), help="The run whose progress and curves are shown below.")
run = Path(runs.set_index("run").loc[selected, "path"])


@st.fragment(run_every=2)
def live_view(run: Path) -> None:
    """Progress, curves, log and the controls; reruns alone every 2 s so buttons follow the job's state."""
    status = read_status(run)
    state = effective_state(status)
    epoch, total = int(status.get("epoch", 0)), int(status.get("epochs", 1) or 1)
    eta = status.get("eta_s")
    st.progress(min(epoch / total, 1.0), text=f"{state} · epoch {epoch}/{total}"
                + (f" · ETA {eta:.0f} s" if state == "running" and eta else ""))
    if status.get("message"):
        st.warning(status["message"])
    if derived := derived_from(status):
        st.caption(f"{derived.capitalize()}: a copy of its parent's model with statistics re-measured on that site's images "
                   "(no labels read, no training), so the curves below are the parent's.")
    if status.get("weights"):
        st.caption(f"Backbone weights: {status['weights']}")
    if status.get("best_value") is not None:
        st.caption(f"best {status.get('best_metric')}: {status['best_value']:.4f} · precision {status.get('precision', '?')}"
                   + (f" · learning rate now {status['lr']:.2g}" if status.get("lr") else ""))
    controls(run, state, status.get("lr"))
    metrics = read_metrics(run)
    if len(metrics):
        st.plotly_chart(training_curves_figure(metrics), width="stretch", key=f"curves-{run.name}")
    external = read_metrics(run, EXTERNAL_FILE)
    if len(external):
        st.caption("Validation and the watched external sets, scored the same way after every epoch. The external sets "
                   "are only watched: nothing in training reads them.")
        st.plotly_chart(generalisation_curves_figure(external), width="stretch", key=f"external-{run.name}")
    batches = read_metrics(run, "batches.csv")
    if len(batches):
        st.plotly_chart(batch_curves_figure(batches), width="stretch", key=f"batches-{run.name}")
    log = run / "log.txt"
    if log.exists():
        st.code("\n".join(log.read_text().splitlines()[-8:]) or "(empty)", language=None)


def controls(run: Path, state: str, lr: float | None) -> None:
    cols = st.columns(6)
    if cols[0].button("Stop now", disabled=state != "running", key="ctl_stop",
                      help="Stop after the current batch. What the part epoch learned is checkpointed, but it is not "
                      "counted: Resume runs that epoch again in full, so no image of it is skipped."):
        request(run, stop="now")
    if cols[1].button("Stop after epoch", disabled=state != "running", key="ctl_stop_epoch",
                      help="Let the current pass over the images finish, then stop."):
        request(run, stop="after_epoch")
    extend_by = cols[2].number_input("Extend by", 1, 100, 2, key="ctl_extend_n", label_visibility="collapsed", help=help_text("epoch"))
    if cols[2].button(f"Extend by {extend_by}", disabled=state not in ("running", "queued"), key="ctl_extend",
                      help="Add more passes over the images to this run."):
        request(run, extend=int(extend_by))
    if lr and st.session_state.get("ctl_lr_seen") != (run.name, lr):  # the field follows the run's LR as it changes
        st.session_state["ctl_lr_seen"] = (run.name, lr)
        st.session_state["ctl_lr_value"] = min(max(float(lr), 1e-7), 1.0)
    st.session_state.setdefault("ctl_lr_value", 1e-4)  # the value lives in the state: no default beside it
    new_lr = cols[3].number_input("New LR", 1e-7, 1.0, format="%.6f", key="ctl_lr_value", label_visibility="collapsed",
                                  help=help_text("learning rate") + " It shows the run's current rate until the run changes it.")
    if cols[3].button("Set LR", disabled=state != "running", key="ctl_lr",
                      help="Change the learning rate from the next batch on, e.g. lower it when the curves stop improving "
                           "(a cosine schedule slides down from the new value)."):
        request(run, lr=float(new_lr))
    refusal = jobs.resume_refusal(run)
    if cols[4].button("Resume", disabled=state not in ("stopped", "failed", "interrupted", "completed") or bool(refusal),
                      key="ctl_resume", help=refusal or "Continue from the last checkpoint; a completed run is extended by the "
                                                      "'Extend by' epochs."):
        try:  # a refusal, or no process to be had (the run is then marked failed and stays resumable): a message
            st.info(f"Resumed: {jobs.resume(run, extend=int(extend_by) if state == 'completed' else 0)}")
        except MedImageError as exc:
            st.error(f"Not resumed: {exc}")
    confirm = cols[5].checkbox("confirm", key="ctl_delete_confirm", help="Tick to enable Delete.")
    if cols[5].button("Delete", disabled=state not in FINAL_STATES + ("unknown", "queued") or not confirm, key="ctl_delete",
                      help="Delete the run folder: its model, curves and predictions."):
        try:
            delete_run(run)
            st.session_state.pop("train_run", None)
            st.rerun(scope="app")
        except MedImageError as exc:
            st.error(str(exc))


live_view(run)


@st.fragment(run_every=5)
def runs_table() -> None:
    st.dataframe(list_runs().drop(columns="path"), hide_index=True, width="stretch")


runs_table()

compare = st.multiselect("Overlay runs (e.g. an LR sweep)", names, key="train_compare",
                         help="Draw the curves of several runs together to see which settings learned best.")
if compare:
    folders = {n: Path(runs.set_index("run").loc[n, "path"]) for n in compare}
    frames = {n: read_metrics(folder) for n, folder in folders.items()}
    st.plotly_chart(runs_overlay_figure({n: m for n, m in frames.items() if len(m)}), width="stretch")
    differ = settings_that_differ(folders)
    if len(differ):
        st.caption("What these runs were trained with differently:")
        st.dataframe(differ.astype(str), width="stretch")
    elif len(compare) > 1:
        st.caption("These runs were trained with the same settings, seed included.")
