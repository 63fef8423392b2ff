"""The training job: runs in its own process, owns its run folder, honours the page's requests.

`run_job(run)` reads config.json, builds the pipeline and the model (or resumes `last.keras` with
its optimizer state at the right epoch), trains with Keras callbacks, and keeps status.json,
metrics and checkpoints current. Extending a finished fit starts another `fit` from where it ended.
"""

from __future__ import annotations

import importlib.util
import math
import os
import shutil
import socket
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from tensorflow.python.framework import config as tf_framework_config  # disable_op_determinism has no public name

from core import multiworker_fixes
from core.atomic import write_bytes, write_json, write_text
from core.augment import AugmentConfig, blend_batches
from core.catalog import SCRATCH
from core.cluster import Role, lost_worker_message, role, scratch_copy, weights_digest
from core.dataset_store import open_source
from core.errors import MedImageError
from core.external import monitor_for, predict_externals
from core.model_card import training_procedure
from core.models import ModelConfig, build_model, head_for_classes
from core.pipeline import PipelineConfig, cache_plan, make_dataset
from core.runs import now_iso, read_json, read_metrics, read_status, run_rows, take_requests, write_status
from core.splits import class_weights


@dataclass(frozen=True)
class TrainConfig:
    """Everything a job needs; saved as config.json."""

    data: str = "demo"  # any source the Dataset page opens: 'demo', a folder, 'saved:<name>', ...
    model: ModelConfig = field(default_factory=ModelConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    augment: AugmentConfig | None = field(default_factory=AugmentConfig)
    epochs: int = 10
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    class_weighting: bool = True
    early_stopping_patience: int = 5  # 0 = off; min_delta 1e-3 on val_loss (the seed's 1.0 never fired)
    early_stopping_start: int = 0  # epochs early stopping ignores: val_loss jumps while BatchNorm and the LR settle
    reduce_lr_patience: int = 2  # 0 = off; halves the LR when val_loss stalls
    step_decay_every: int = 0  # 0 = off; else multiply the LR by step_decay_factor every N epochs
    step_decay_factor: float = 0.5
    dwell: bool = False  # seed 000: on a worse val_loss, restore the best weights and scale the LR
    dwell_factor: float = 0.5
    tensorboard: bool = True
    folds: int = 0  # >= 2: stratified K-fold cross-validation over train+val, one sub-run per fold
    rows: str | None = None  # a CSV of path,split in the run folder that replaces the dataset's split
    monitor: str = "val_loss"  # best checkpoint on val_loss (min) or val_auc (max)
    batch_log_every: int = 10
    seed: int = 0
    mixed_precision: str = "auto"  # "auto" (device_info.precision_policy, per network), "on" (float16 on a GPU, else bfloat16), "off"
    label_smoothing: float = 0.0  # binary head only: targets 0/1 become s/2 and 1 - s/2
    tta: bool = False  # predictions (threshold tuning, Evaluate, Predict) average the image and its mirror
    tune_threshold: bool = False  # binary head: Youden threshold on the validation split at the end, saved in status
    fine_tune_epochs: int = 0  # backbones: after `epochs` of feature extraction, unfreeze model.fine_tune_layers for this many more
    fine_tune_lr: float = 1e-4  # the (lower) learning rate of that second phase
    external: tuple[str, ...] = ()  # sources scored after every epoch (core.external), never learned from or selected on
    ema_epochs: float = 0.0  # 0 = off; else the weights are averaged (exponentially) over about this many epochs: see ema_momentum
    mixup: float = 0.0  # 0 = off; else binary head: training images blended in pairs, weight ~ Beta(mixup, mixup) (core.augment.blend_batches)
    cutmix: float = 0.0  # 0 = off; else binary head: a box of another image pasted in, target by area (core.augment.blend_batches)
    cosine: bool = False  # the LR follows a half cosine from learning_rate towards 0 over the run's epochs (replaces the plateau halving)
    deterministic: bool = False  # TensorFlow op determinism: the same data, settings and seed give the same weights bit for bit
    batchnorm_epochs: float = 1.0  # BatchNorm statistics span at most about this many epochs (0: the network's own momentum); batchnorm_momentum

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["augment"] = self.augment.to_dict() if self.augment else None
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        values = dict(values)
        values["model"] = ModelConfig.from_dict(values.get("model", {}))
        values["pipeline"] = PipelineConfig(**values.get("pipeline", {}))
        values["augment"] = AugmentConfig.from_dict(values["augment"]) if values.get("augment") else None
        values["external"] = tuple(values.get("external") or ())
        # a config written before the BatchNorm span existed trained with the network's own momentum: read it as off (0),
        # as every option an older run lacks reads, and not as today's default
        values.setdefault("batchnorm_epochs", 0.0)
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in values.items() if k in known})


def save_model_atomic(model: keras.Model, path: Path) -> None:
    """Keras writes .keras files in place; write beside and rename so readers never load half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".keras")
    os.close(fd)
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def make_config(
    data: str, model: str = "smallnet", image_size: int = 128, epochs: int = 10, batch_size: int = 16,
    weights: str = "none", channels: int | None = None, augment: bool = True, **overrides: Any,
) -> TrainConfig:
    """A TrainConfig whose pipeline matches its model: grayscale for scratch models, 3 channels
    for ImageNet backbones (unless asked otherwise), the same image size on both sides."""
    defaults = TrainConfig()
    channels = channels or (1 if model in SCRATCH else 3)
    model_keys = ("freeze", "fine_tune_layers", "head", "pooling", "intensity", "dropout", "dense", "alpha", "crop")
    model_overrides = {k: overrides.pop(k) for k in model_keys if k in overrides}
    model_config = replace(defaults.model, name=model, image_size=image_size, channels=channels,
                           weights="none" if model in SCRATCH else weights, **model_overrides)
    pipeline = replace(defaults.pipeline, image_size=image_size, channels=channels, batch_size=batch_size)
    config = replace(defaults, data=data, model=model_config, pipeline=pipeline, epochs=epochs,
                     augment=defaults.augment if augment else None, **overrides)
    check_phases(config)
    return config


def check_phases(config: TrainConfig) -> None:
    """Refuse a second (fine-tuning) phase that cannot do what it says, before a run exists: it unfreezes a pretrained
    backbone after feature extraction. Without this, a backbone trained whole was cut back to its last layers at the
    switch, and a scratch model only had its learning rate changed."""
    model = config.model
    if model.fine_tune_layers < 0:
        raise MedImageError(f"Layers to fine-tune must be 0 (all) or more, not {model.fine_tune_layers}.")
    if not config.fine_tune_epochs:
        return
    if model.name in SCRATCH:
        raise MedImageError(f"Fine-tuning is a second phase for a pretrained backbone; {model.name} trains every layer from the "
                            "first epoch. Set the fine-tuning epochs to 0.")
    if model.freeze != "feature_extraction":
        raise MedImageError(f"Fine-tuning follows feature extraction, and with '{model.freeze}' the backbone already trains from the "
                            "first epoch. Choose feature_extraction (the head first, then fine-tuning) or set the fine-tuning epochs to 0.")


class Dwell(keras.callbacks.Callback):
    """Seed 000's 'dwell': when val_loss gets worse, go back to the best weights and lower the LR.

    It keeps the model near its best point instead of wandering off, at the cost of a smaller step.
    """

    def __init__(self, factor: float = 0.5) -> None:
        super().__init__()
        self.factor, self.best, self.best_weights = factor, float("inf"), None

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        value = (logs or {}).get("val_loss")
        if value is None:
            return
        if value < self.best:
            self.best, self.best_weights = value, self.model.get_weights()
        elif self.best_weights is not None:
            self.model.set_weights(self.best_weights)
            lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)) * self.factor
            self.model.optimizer.learning_rate.assign(lr)


def step_decay(every: int, factor: float):
    """LR multiplied by `factor` every `every` epochs (from the LR the epoch starts with)."""
    return keras.callbacks.LearningRateScheduler(lambda epoch, lr: lr * factor if epoch and epoch % every == 0 else lr)


class CosineDecay(keras.callbacks.Callback):
    """The LR follows half a cosine, from the LR the run starts with towards 0 at the end of its planned epochs.

    Each epoch multiplies the optimizer's current LR by the curve's step (f(e) / f(e - 1), f(e) = (1 + cos(pi e / T)) / 2),
    instead of setting it from the start LR, so what the page does to a running job holds: a new LR typed mid-run
    applies at once and the curve continues from it, and "extend" (T read from the recorder each epoch) stretches the rest of it.
    A resumed run picks the curve up from the LR saved with its optimizer."""

    def __init__(self, recorder: RunRecorder) -> None:
        super().__init__()
        self.recorder = recorder

    def factor(self, epoch: int) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * min(epoch, self.recorder.epochs) / max(self.recorder.epochs, 1)))

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        before = self.factor(epoch - 1)
        if epoch > 0 and before > 0:
            lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            self.model.optimizer.learning_rate.assign(lr * self.factor(epoch) / before)


def blend_of(config: TrainConfig, n_classes: int | None = None) -> tuple[str, float] | None:
    """The run's image blending (kind, strength) or None; a message for a config that cannot train with it.

    n_classes: the dataset's class count, for a check before the job fits the head to it (a form or the CLI)."""
    chosen = [(kind, strength) for kind, strength in (("mixup", config.mixup), ("cutmix", config.cutmix)) if strength]
    if not chosen:
        return None
    if len(chosen) > 1:
        raise MedImageError("Choose mixup or CutMix, not both: each blends a training image with one other.")
    name = {"mixup": "Mixup", "cutmix": "CutMix"}[chosen[0][0]]
    head = head_for_classes(config.model, n_classes).head if n_classes else config.model.head
    if head != "binary":
        raise MedImageError(f"{name} is for a binary head (two classes); this run's head is '{head}'"
                            + (f" for {n_classes} classes." if n_classes else "."))
    return chosen[0]


def log_line(run: Path, line: str) -> None:
    """One timestamped line in the run's log.txt (shown on the Train page)."""
    with open(run / "log.txt", "a") as fh:
        fh.write(f"{now_iso()} {line}\n")


class RunRecorder(keras.callbacks.Callback):
    """Status heartbeat, metrics files, best/last checkpoints, and the page's control requests."""

    def __init__(self, run: Path, config: TrainConfig, steps: int, initial_epoch: int = 0, controls: bool = True) -> None:
        super().__init__()
        self.run, self.config, self.steps, self.initial_epoch = run, config, steps, initial_epoch
        # Live controls change one process' optimizer or loop: in a multi-worker cluster that would
        # desynchronise the workers (the chief alone stopping leaves the others waiting), so they are off.
        self.controls = controls
        self.epochs = config.epochs
        self.extend = 0
        self.stopped_by_user = False
        self._stop_after_epoch = False
        self._epoch_start = time.time()
        self._epoch = 0
        self._batch = 0  # batches done in the epoch under way
        self.part_epoch = False  # "Stop now" cut the epoch under way short: checkpointed, not counted
        self._history = pd.DataFrame()
        self._resumed = False
        self._batches: list[dict[str, float]] = []
        status = read_status(run)
        self.best = status.get("best_value")
        self._mode = "max" if "auc" in config.monitor else "min"

    def _lr(self) -> float:
        return float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def handle_requests(self) -> None:
        if not self.controls:
            return
        requests = take_requests(self.run)
        if not requests:
            return
        if "lr" in requests:
            self.model.optimizer.learning_rate.assign(float(requests["lr"]))
            self._log(f"learning rate set to {float(requests['lr']):g} from the page")
        if requests.get("extend"):
            self.extend += int(requests["extend"])
            self.epochs += int(requests["extend"])
            write_status(self.run, epochs=self.epochs)
            self._log(f"extended by {int(requests['extend'])} epochs to {self.epochs}")
        if requests.get("stop") == "now":
            self.stopped_by_user = True
            self.model.stop_training = True
            self._log("stop requested: stopping now")
        elif requests.get("stop") == "after_epoch":
            self._stop_after_epoch = True
            self._log("stop requested: stopping after this epoch")

    def _checkpoint(self, logs: dict[str, float], done: int) -> None:
        """best.keras when the monitored value improved, last.keras always, and last.json: the epochs done (Resume's
        starting epoch)."""
        value = logs.get(self.config.monitor)
        if value is not None and (self.best is None or (value < self.best if self._mode == "min" else value > self.best)):
            self.best = value
            save_model_atomic(self.model, self.run / "best.keras")
        save_model_atomic(self.model, self.run / "last.keras")
        write_json(self.run / "last.json", {"epoch": done})

    def _log(self, line: str) -> None:
        log_line(self.run, line)

    def on_train_begin(self, logs=None) -> None:
        if not self._resumed:  # once per job: a later fit (an extension, the fine-tuning phase) keeps the rows so far
            history = read_metrics(self.run)
            # after a crash, rows past the checkpoint being resumed would be trained again: drop them
            self._history = history[history["epoch"] <= self.initial_epoch] if len(history) else history
            self._resumed = True
        self.handle_requests()

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        self._epoch, self._epoch_start, self._batch = epoch, time.time(), 0

    def on_train_batch_end(self, batch: int, logs=None) -> None:
        self._batch = batch + 1
        if (batch + 1) % self.config.batch_log_every == 0 or batch + 1 == self.steps:
            row = {"epoch": self._epoch + 1, "batch": batch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
            self._batches.append(row)
            write_text(self.run / "batches.csv", pd.DataFrame(self._batches).to_csv(index=False))
            # the LR now (a schedule or the page may have changed it since the epoch began): the page's LR field shows it
            write_status(self.run, heartbeat=now_iso(), heartbeat_ts=time.time(), batch=batch + 1, steps=self.steps, lr=self._lr())
            self.handle_requests()

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        logs = {k: float(v) for k, v in (logs or {}).items()}
        if self.stopped_by_user and not self._stop_after_epoch and self._batch < self.steps:
            self._end_part_epoch(epoch, logs)
            return
        row = {"epoch": epoch + 1, "lr": self._lr(), "seconds": round(time.time() - self._epoch_start, 2), **logs}
        self._history = pd.concat([self._history, pd.DataFrame([row])], ignore_index=True)
        write_text(self.run / "metrics.csv", self._history.to_csv(index=False))
        self._checkpoint(logs, epoch + 1)
        eta = (self.epochs - epoch - 1) * float(self._history["seconds"].tail(3).mean())
        write_status(
            self.run, epoch=epoch + 1, epochs=self.epochs, best_metric=self.config.monitor, best_value=self.best,
            eta_s=round(eta, 1), heartbeat=now_iso(), heartbeat_ts=time.time(), lr=self._lr(),
        )
        self._log(f"epoch {epoch + 1}/{self.epochs} " + " ".join(f"{k}={v:.4f}" for k, v in logs.items()))
        self.handle_requests()
        if self._stop_after_epoch:
            self.stopped_by_user = True
            self.model.stop_training = True

    def _end_part_epoch(self, epoch: int, logs: dict[str, float]) -> None:
        """"Stop now" mid-epoch: keep the work (last.keras, and best.keras if it validated better) but count only the
        epochs done, so Resume runs this epoch again in full instead of skipping the rest of its images. No metrics row:
        a row is one whole pass over the training images."""
        self.part_epoch = True
        self._checkpoint(logs, epoch)
        write_status(self.run, epoch=epoch, best_value=self.best, heartbeat=now_iso(), heartbeat_ts=time.time(), lr=self._lr())
        scores = " ".join(f"{k}={v:.4f}" for k, v in logs.items() if k.startswith("val_"))
        self._log(f"stopped at batch {self._batch}/{self.steps} of epoch {epoch + 1}: checkpointed{' (' + scores + ')' if scores else ''} "
                  f"but not counted; Resume runs epoch {epoch + 1} again in full")


def ema_momentum(epochs: float, steps_per_epoch: int) -> float:
    """The optimizer's weight-average momentum for a horizon in epochs: 1 - 1/(horizon in steps). A horizon in epochs
    means the same on 50 images and on 100,000 (a fixed momentum such as 0.998 spans 500 steps: 3.4 epochs of the
    chest X-rays, 36 of the demo set (14 steps an epoch), where the average would barely leave the initial weights)."""
    return 1.0 - 1.0 / max(1.0, epochs * steps_per_epoch)


def batchnorm_momentum(epochs: float, steps_per_epoch: int) -> float:
    """The BatchNorm momentum whose moving statistics span `epochs` of training (at least 10 batches, so one noisy batch
    cannot dominate them). Validation, checkpoints and every prediction use the moving statistics, not the batch's: they
    must describe the network as it is now. A network's own momentum counts batches, not epochs: MobileNetV2's 0.999 spans
    1,000 batches, 7.6 epochs of the chest X-rays and 125 of the demo set (8 batches an epoch), where six epochs of the X-ray
    recipe left its statistics 95% ImageNet's: validation accuracy stayed at 0.53-0.57 while its AUC rose to 0.98, and the
    best checkpoint (on val_loss) was epoch 1's. With a one-epoch span the same run validated at 1.00 by epoch 6."""
    return 1.0 - 1.0 / max(10.0, epochs * steps_per_epoch)


def follow_batchnorm(model: keras.Model, config: TrainConfig, steps_per_epoch: int) -> float | None:
    """Lower every BatchNormalization's momentum to batchnorm_momentum where the layer's own is slower (never raise it).
    The new momentum, or None when no layer changed. Saved with the model, so a resumed run keeps it."""
    from core.models import all_layers

    if not config.batchnorm_epochs:
        return None
    momentum = batchnorm_momentum(config.batchnorm_epochs, steps_per_epoch)
    slower = [layer for layer in all_layers(model) if isinstance(layer, keras.layers.BatchNormalization) and layer.momentum > momentum]
    for layer in slower:
        layer.momentum = momentum
    return momentum if slower else None


def _compile(model: keras.Model, config: TrainConfig, steps_per_epoch: int) -> None:
    head = config.model.head
    loss = {"binary": keras.losses.BinaryCrossentropy(label_smoothing=config.label_smoothing),
            "multiclass": "sparse_categorical_crossentropy", "ordinal": "mse"}[head]
    metrics: list[Any] = {
        "binary": [keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc"),
                   keras.metrics.Precision(name="precision"), keras.metrics.Recall(name="recall")],  # F1 from these
        "multiclass": [keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        "ordinal": [keras.metrics.MeanAbsoluteError(name="mae")],
    }[head]
    optimizer = {"adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD, "rmsprop": keras.optimizers.RMSprop}[config.optimizer]
    averaging = {"use_ema": True, "ema_momentum": ema_momentum(config.ema_epochs, steps_per_epoch)} if config.ema_epochs else {}
    model.compile(optimizer=optimizer(learning_rate=config.learning_rate, **averaging), loss=loss, metrics=metrics)


def averaged_weights_swap(resumed: bool) -> keras.callbacks.SwapEMAWeights:
    """Keras' swap of the optimizer's weight average into the model at each epoch's end. First among the callbacks, so
    validation, best/last checkpoints and the external monitor all see the averaged weights.

    A checkpoint written at an epoch's end therefore holds the average as the model's weights and the raw weights in
    the optimizer's average slots. Resuming from it, the swap starts in the 'average in the model' state, so the first
    epoch swaps them back and training continues exactly where it stopped (not from the average)."""
    swap = keras.callbacks.SwapEMAWeights(swap_on_epoch=True)
    swap._ema_weights_in_model = resumed  # noqa: SLF001 - Keras keeps this state private and has no resume hook
    return swap


def precision_for(setting: str, model: str | None = None, device: dict[str, Any] | None = None) -> str:
    """The dtype policy for a run's `mixed_precision` setting on this machine, for the named network ("auto" keeps
    depthwise networks in float32 on CPUs, where bfloat16 slows them: device_info.precision_policy). `device` is
    device_info.device_summary() when the caller already holds it (the Train page caches it)."""
    from core.device_info import device_summary, precision_policy

    if setting == "off":
        return "float32"
    device = device or device_summary()
    if setting == "on":
        return "mixed_float16" if device["gpus"] else "mixed_bfloat16"
    return precision_policy(device["gpus"], device["cpu_bf16"], model)


def weights_label(model: ModelConfig) -> str:
    """What the backbone started from, for the status and the Train page: the file with its hash check, or none."""
    from core.catalog import BACKBONES
    from core.models import imagenet_weights_file
    from core.weights import describe

    if model.name not in BACKBONES or model.weights in ("none", "", None):
        return "random initialisation (from scratch)"
    if model.weights == "imagenet":
        found = imagenet_weights_file(model)
        return describe(found).label if found else "ImageNet, downloaded by Keras into ~/.keras/models"
    return describe(model.weights, BACKBONES[model.name].file_for(model.alpha, model.image_size)).label


def unfreeze_for_fine_tuning(model: keras.Model, config: TrainConfig, steps_per_epoch: int) -> None:
    """The seeds' second phase: unfreeze the backbone's last `fine_tune_layers` layers (BatchNorm stays frozen), or with
    0 every layer, BatchNorm included (LP-FT: a trained head first, so fine-tuning distorts the pretrained features
    less; Kumar et al. 2022), and recompile with the lower `fine_tune_lr`; the optimizer starts afresh, as in Keras'
    fine-tuning guide."""
    from core.models import set_backbone_trainable

    set_backbone_trainable(model, replace(config.model, freeze="fine_tune"))
    _compile(model, replace(config, learning_rate=config.fine_tune_lr), steps_per_epoch)


def distribution_strategy():
    """MultiWorkerMirroredStrategy when TF_CONFIG describes a cluster, MirroredStrategy on several
    GPUs, else the default (one device). Models are built, compiled and loaded inside its scope."""
    import tensorflow as tf

    if os.environ.get("TF_CONFIG"):
        from core.multiworker_fixes import patch_log_reduction

        patch_log_reduction()
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


class ClusterEcho(keras.callbacks.Callback):
    """Multi-worker runs: each worker prints its epoch and a digest of its weights to its own output,
    so a person (or the test) can see the workers step in lockstep; nothing goes to the run folder."""

    def __init__(self, member: Role) -> None:
        super().__init__()
        self.member = member

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        print(f"[{self.member}] epoch {epoch + 1} loss {float((logs or {}).get('loss', float('nan'))):.6f} "
              f"weights {weights_digest(self.model.get_weights())}", flush=True)


def run_job(run: Path, verbose: int = 2) -> str:
    """Train (or resume) the run in this process; returns the final state. verbose: Keras fit output.

    In a multi-worker cluster (TF_CONFIG) every worker calls this with the shared run folder; only the
    chief writes it, the others train the same steps against a scratch copy that is deleted after.
    """
    member = role()
    if member.is_chief:
        return _train(Path(run), verbose, member)
    scratch = scratch_copy(Path(run))
    try:
        return _train(scratch, verbose, member)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _train(run: Path, verbose: int, member: Role) -> str:
    write_status(run, state="running", pid=os.getpid(), host=socket.gethostname(), started=now_iso(),
                 heartbeat=now_iso(), heartbeat_ts=time.time(), message="", workers=member.workers)
    previous = keras.mixed_precision.global_policy()
    was_deterministic = tf_framework_config.is_op_determinism_enabled()
    try:
        # first: a multi-worker strategy must exist before any other TensorFlow op (the pipeline's)
        strategy = distribution_strategy()
        config = TrainConfig.from_dict(read_json(run / "config.json"))
        check_phases(config)  # a hand-edited config.json too
        keras.utils.set_random_seed(config.seed)
        if config.deterministic:  # else parallel input stages draw augmentation from one seed state in any order
            tf.config.experimental.enable_op_determinism()
        policy = precision_for(config.mixed_precision, config.model.name)
        keras.mixed_precision.set_global_policy(policy)  # models built below take it; restored when the job ends
        dataset = open_source(config.data)
        classes = dataset.classes
        table = dataset.table
        fitted = head_for_classes(config.model, len(classes))
        if fitted.head != config.model.head and (run / "last.keras").exists():  # a run checkpointed before heads were fitted
            raise MedImageError(f"{run.name} holds a model with a '{config.model.head}' head, which cannot learn this dataset's "
                                f"{len(classes)} classes. Start a new run: it gets a '{fitted.head}' head.")
        if fitted != config.model:  # written back: Evaluate, Predict, adapt and export read the head from config.json
            log_line(run, f"{len(classes)} classes: a '{fitted.head}' head")
            config = replace(config, model=fitted)
            write_json(run / "config.json", config.to_dict())
        if config.folds >= 2:
            write_status(run, classes=classes)
            return _run_folds(run, config, table)
        table = run_rows(run, config.to_dict(), table)  # a fold, preset or recipe: its own split
        train, val = table[table["split"] == "train"], table[table["split"] == "val"]
        plan = cache_plan(len(train) + len(val), config.pipeline)
        log_line(run, plan.message())
        status = read_status(run)
        planned = max(int(status.get("epochs", config.epochs)), config.epochs + config.fine_tune_epochs)  # extended: more
        described = {**config.to_dict(), "epochs": planned - config.fine_tune_epochs}
        log_line(run, "training: " + " ".join(training_procedure(described)))  # what the page's log says it does
        pipeline = replace(config.pipeline, cache=plan.in_memory)
        train_ds = make_dataset(train, classes, pipeline, config.augment, shuffle=True)
        val_ds = make_dataset(val, classes, pipeline) if len(val) else None
        weights = None
        if config.class_weighting and config.model.head != "ordinal":
            by_label = class_weights(train["label"])
            weights = {classes.index(label): w for label, w in by_label.items()}
        blend = blend_of(config)
        if blend:
            train_ds = train_ds.map(blend_batches(*blend, weights, seed=config.seed)).prefetch(tf.data.AUTOTUNE)
            weights = None  # carried by each blend as its sample weight
        steps = int(np.ceil(len(train) / config.pipeline.batch_size))
        last = run / "last.keras"
        with strategy.scope():
            resumed = last.exists()  # a checkpoint, even of a part epoch: an averaged one holds the average (see the swap)
            if resumed:
                model = keras.saving.load_model(last, safe_mode=True)  # compiled, with optimizer state
                initial_epoch = int(read_json(run / "last.json").get("epoch", 0))
            else:
                model = build_model(config.model)
                if (momentum := follow_batchnorm(model, config, steps)) is not None:
                    span = f"{config.batchnorm_epochs:g} epoch" + ("" if config.batchnorm_epochs == 1 else "s")
                    log_line(run, f"BatchNorm: moving statistics over about the last {round(1 / (1 - momentum))} batches "
                                  f"(momentum {momentum:.4f}, about {span}), not the network's slower own")
                _compile(model, config, steps)
                initial_epoch = 0
                write_status(run, weights=weights_label(config.model))
        recorder = RunRecorder(run, config, steps, initial_epoch, controls=not member.distributed)
        recorder.epochs = planned
        write_status(run, classes=classes, precision=policy, epochs=recorder.epochs, epoch=initial_epoch,
                     replicas=strategy.num_replicas_in_sync)
        recorder.set_model(model)
        recorder.handle_requests()  # e.g. "extend" sent to a finished run before resuming it
        callbacks: list[keras.callbacks.Callback] = [recorder]
        if config.ema_epochs:
            callbacks.insert(0, averaged_weights_swap(resumed=resumed))
        if member.distributed:
            callbacks.append(ClusterEcho(member))
        if config.early_stopping_patience and val_ds is not None:
            callbacks.append(keras.callbacks.EarlyStopping("val_loss", min_delta=1e-3, patience=config.early_stopping_patience,
                                                           start_from_epoch=config.early_stopping_start))
        if config.cosine:
            callbacks.append(CosineDecay(recorder))
        elif config.reduce_lr_patience and val_ds is not None:
            callbacks.append(keras.callbacks.ReduceLROnPlateau("val_loss", factor=0.5, patience=config.reduce_lr_patience))
        if config.step_decay_every and not config.cosine:  # one schedule: a hand-edited config with both gets the cosine
            callbacks.append(step_decay(config.step_decay_every, config.step_decay_factor))
        if config.dwell and val_ds is not None:
            callbacks.append(Dwell(config.dwell_factor))
        if config.tensorboard and importlib.util.find_spec("tensorboard") is not None:
            callbacks.append(keras.callbacks.TensorBoard(log_dir=str(run / "tensorboard")))
        external = monitor_for(run, config, classes, val, skip=lambda: recorder.part_epoch)
        if external is not None:
            callbacks.append(external)  # last, and it only writes external.csv: nothing above can read what it measures
        epoch = initial_epoch
        switch = config.epochs if config.fine_tune_epochs else None  # the epoch the second (fine-tuning) phase starts
        while epoch < recorder.epochs and not recorder.stopped_by_user:
            tuning = bool(read_status(run).get("fine_tuning"))
            if switch is not None and not tuning and epoch >= switch:
                with strategy.scope():
                    unfreeze_for_fine_tuning(model, config, steps)
                write_status(run, fine_tuning=True, fine_tune_from_epoch=epoch)
                tuning = True
            end = recorder.epochs if switch is None or tuning else min(switch, recorder.epochs)
            if member.distributed:
                multiworker_fixes.build_locally(model, train_ds, strategy)
            history = model.fit(train_ds, validation_data=val_ds, epochs=end, initial_epoch=epoch,
                                class_weight=weights, callbacks=callbacks, verbose=verbose)
            done = len(history.epoch)
            epoch = epoch + done
            if switch is not None and not tuning and epoch < recorder.epochs:
                epoch = max(epoch, switch)  # early stopping in the first phase moves on to fine-tuning
                model.stop_training = False
                continue
            if done == 0 or (model.stop_training and not recorder.extend):
                break  # early stopping (or a stop) ended it; an extend request during the fit continues it
            recorder.extend = 0
        if last.exists():  # else no batch was trained (a stop before the first): no model, so Resume starts afresh
            if config.ema_epochs or recorder.part_epoch:  # the checkpoint's weights (the model may hold the raw average's)
                write_bytes(run / "final.keras", last.read_bytes())
            else:
                save_model_atomic(model, run / "final.keras")
            if not (run / "best.keras").exists():
                write_bytes(run / "best.keras", last.read_bytes())
        if config.tune_threshold and config.model.head == "binary" and len(val) and not recorder.stopped_by_user:
            from core.evaluate import tune_threshold

            write_status(run, message="choosing the decision threshold on the validation split")
            tune_threshold(run, val)
        if config.external and not recorder.stopped_by_user:
            write_status(run, message="predicting the external sets with the best model")
            predict_externals(run, config.external, classes)
        if member.is_chief and not recorder.stopped_by_user and (run / "best.keras").exists():
            from core.novelty import measure_if_possible

            write_status(run, message="measuring which images are usual for the model (Predict's check of unusual images)")
            if reason := measure_if_possible(run):
                print(reason, flush=True)
        state = "stopped" if recorder.stopped_by_user else "completed"
        write_status(run, state=state, finished=now_iso(), heartbeat=now_iso(), heartbeat_ts=time.time(), eta_s=0, message="")
        return state
    except Exception as exc:  # noqa: BLE001 - the job reports every failure in its status
        write_text(run / "error.txt", traceback.format_exc())
        traceback.print_exc()  # to the job's own output too: a non-chief worker's run folder is a scratch copy
        message = (lost_worker_message(exc, int(read_status(run).get("epoch", 0))) if member.distributed else None)
        first_line = (str(exc).strip().splitlines() or [""])[0][:500]  # TensorFlow errors can print whole tensors
        write_status(run, state="failed", finished=now_iso(), message=message or f"{type(exc).__name__}: {first_line}")
        return "failed"
    finally:
        keras.mixed_precision.set_global_policy(previous)
        if not was_deterministic:  # a job run in-process (tests, the CLI's foreground) leaves the process as it found it
            tf_framework_config.disable_op_determinism()


def _run_folds(run: Path, config: TrainConfig, table: pd.DataFrame) -> str:
    """K-fold CV in one job: fold-k/ sub-runs trained one after another; cv.csv summarises them.

    The test split is never used here; each fold validates on its k-th part of train+val. The fold
    models (fold-k/best.keras) form the ensemble the Evaluate page can average.
    """
    from core.runs import create_run
    from core.splits import fold_indices

    pool = table[table["split"].isin(["train", "val"])].reset_index(drop=True)
    summary = []
    for k, val_idx in enumerate(fold_indices(pool, config.folds, config.seed), 1):
        fold_dir = run / f"fold-{k}"
        if not (fold_dir / "config.json").exists():
            split = pd.Series("train", index=pool.index)
            split.iloc[val_idx] = "val"
            sub = replace(config, folds=0, rows="rows.csv")
            made = create_run(sub.to_dict(), run)
            made.rename(fold_dir)
            write_text(fold_dir / "rows.csv", pool[["path"]].assign(split=split).to_csv(index=False))
        write_status(run, fold=k, folds=config.folds, message=f"fold {k}/{config.folds}", heartbeat=now_iso(), heartbeat_ts=time.time())
        if read_status(fold_dir).get("state") != "completed":
            state = run_job(fold_dir, verbose=0)
            if state != "completed":
                write_status(run, state=state, finished=now_iso(), message=f"fold {k} ended {state}")
                return state
        best = read_metrics(fold_dir)
        summary.append({"fold": k, **best.loc[best["val_loss"].idxmin()].to_dict()} if len(best) else {"fold": k})
    cv = pd.DataFrame(summary)
    write_text(run / "cv.csv", cv.to_csv(index=False))
    means = {f"cv_{c}": float(cv[c].mean()) for c in ("val_loss", "val_accuracy", "val_auc") if c in cv}
    write_status(run, state="completed", finished=now_iso(), epoch=config.epochs, epochs=config.epochs, message="", **means)
    return "completed"


def overfit_preset(data: str, per_class: int = 8, epochs: int = 30, base: TrainConfig | None = None) -> tuple[TrainConfig, pd.DataFrame]:
    """Sanity check (seed 002): a few images per class, no augmentation or regularisation; training
    accuracy should reach 100%. Returns the config and the rows (all 'train', the same as 'val')."""
    from core.dataset import sample_rows

    table = open_source(data).table
    rows = sample_rows(table[table["split"] == "train"], per_class, seed=0)[["path"]]
    both = pd.concat([rows.assign(split="train"), rows.assign(split="val")])
    base = base or TrainConfig(data=data)
    config = replace(base, data=data, epochs=epochs, augment=None, class_weighting=False, early_stopping_patience=0,
                     reduce_lr_patience=0, rows="rows.csv", pipeline=replace(base.pipeline, batch_size=min(8, 2 * per_class)))
    return config, both


def lr_sweep_configs(base: TrainConfig, rates: tuple[float, ...] = (0.1, 0.01, 0.001), epochs: int = 3) -> list[TrainConfig]:
    """One short run per learning rate (seed 002's sweep); the page overlays their curves."""
    return [replace(base, learning_rate=rate, epochs=epochs, early_stopping_patience=0, reduce_lr_patience=0) for rate in rates]


def create_run_with_rows(config: TrainConfig, rows: pd.DataFrame, runs_dir: Path | None = None) -> Path:
    """A run whose config names rows.csv (a preset's own subset and split), with that file beside it."""
    from core.runs import create_run

    run = create_run(replace(config, rows="rows.csv").to_dict(), runs_dir)
    write_text(run / "rows.csv", rows[["path", "split"]].to_csv(index=False))
    return run
