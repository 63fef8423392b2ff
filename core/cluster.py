"""Multi-worker training through tf.distribute: which member of the cluster this process is.

Every machine runs the same job (`python -m core train --run DIR`) with its own TF_CONFIG, and
MultiWorkerMirroredStrategy keeps the copies in lockstep (gradients are all-reduced each step).
The run folder lives on storage all workers share (MEDIMAGE_MODELS_DIR). Only the chief writes it;
the other workers run the very same code against a private scratch copy, as Keras' multi-worker
guide does for checkpoints, so no two processes ever write one file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import MedImageError


@dataclass(frozen=True)
class Role:
    task_type: str
    index: int
    workers: int  # members of the cluster that train (chief + workers)
    has_chief: bool = False  # the cluster names a "chief" task

    @property
    def is_chief(self) -> bool:
        """The chief task, or worker 0 in a cluster without one (TensorFlow's own rule)."""
        return self.task_type == "chief" or (self.task_type == "worker" and self.index == 0 and not self.has_chief)

    @property
    def distributed(self) -> bool:
        return self.workers > 1

    def __str__(self) -> str:
        return f"{self.task_type} {self.index}" + (" (chief)" if self.is_chief else "")


def role() -> Role:
    """This process' role from TF_CONFIG; a lone process is the chief of a cluster of one."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return Role("worker", 0, 1)
    try:
        config = json.loads(raw)
        cluster, task = config["cluster"], config["task"]
        task_type, index = str(task["type"]), int(task["index"])
    except (ValueError, KeyError, TypeError) as exc:
        raise MedImageError(f"TF_CONFIG is not valid ({exc}). Expected {{\"cluster\": {{\"worker\": [...]}}, \"task\": "
                         "{\"type\": \"worker\", \"index\": 0}}.") from exc
    workers = len(cluster.get("worker", [])) + len(cluster.get("chief", []))
    return Role(task_type, index, workers, has_chief=bool(cluster.get("chief")))


def tf_config(hosts: list[str], index: int) -> str:
    """The TF_CONFIG of worker `index` in a cluster of `hosts` ('host:port', worker 0 is the chief)."""
    return json.dumps({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}})


def scratch_copy(run: Path) -> Path:
    """A private copy of the run's inputs for a non-chief worker to train against (and write into)."""
    scratch = Path(tempfile.mkdtemp(prefix=f"medimage-{run.name}-"))
    for path in run.iterdir():  # config, rows, status and checkpoints; not the TensorBoard folder
        if path.name.startswith("."):
            continue  # the chief's files being written atomically (.name-XXXX), renamed away at any moment
        try:
            shutil.copy2(path, scratch / path.name)
        except (FileNotFoundError, IsADirectoryError):
            continue
    return scratch


def weights_digest(weights: list[np.ndarray]) -> str:
    """A short digest of all weights: equal on every worker after every step when they train in lockstep."""
    digest = hashlib.sha256()
    for w in weights:
        digest.update(np.ascontiguousarray(w).tobytes())
    return digest.hexdigest()[:16]


def lost_worker_message(exc: BaseException, epoch: int) -> str | None:
    """A plain message when a training error means a peer left the cluster, else None."""
    import tensorflow as tf

    # what collectives raise when a peer dies or stops answering (measured: UnavailableError within ~10 s)
    lost = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError, tf.errors.CancelledError)
    if not isinstance(exc, lost):
        return None
    return (f"A worker of the cluster stopped responding during epoch {epoch + 1}, so training stopped (every step needs "
            "all workers). Start the same command on every worker again to resume from the last checkpoint. "
            f"({type(exc).__name__})")
