"""Starting training jobs as separate processes, with a simple queue.

Training never runs inside the dashboard: `start` spawns `python -m core train --run DIR` in its
own process session (it survives a dashboard restart). At most `max_running` jobs run at once;
the others stay 'queued', and each job, when it ends, starts the oldest queued run. Claiming a run
is an exclusive file create, so two starters never launch the same run twice.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from core.errors import MedImageError
from core.paths import PROJECT_ROOT, models_dir
from core.runs import effective_state, read_status, request, write_status

DEFAULT_MAX_RUNNING = int(os.environ.get("MEDIMAGE_MAX_JOBS", "1"))


def _claim(run: Path) -> bool:
    try:
        fd = os.open(run / ".claimed", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def _spawn(run: Path) -> subprocess.Popen:
    with open(run / "job.out", "ab") as log:  # the child holds its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "core", "train", "--run", str(run)],
            cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env=os.environ.copy(),
        )


def running_count(runs_dir: Path) -> int:
    """Jobs running, plus those claimed but not yet started (their process is still importing)."""
    count = 0
    for run in runs_dir.iterdir():
        if not run.is_dir():
            continue
        state = effective_state(read_status(run))
        count += state == "running" or (state == "queued" and (run / ".claimed").exists())
    return count


def start(run: Path, max_running: int = DEFAULT_MAX_RUNNING) -> str:
    """Start the run now if a slot is free ('running'), else leave it 'queued'. A process that cannot be made marks the
    run failed, resumable, and raises MedImageError."""
    run = Path(run)
    if running_count(run.parent) >= max_running:
        return "queued"
    if not _claim(run):
        return "queued"
    try:
        _spawn(run)
    except OSError as exc:  # no process could be made (process table or memory full): claimed and queued, it would never start
        (run / ".claimed").unlink(missing_ok=True)
        message = f"The job's process could not be started ({exc}). Resume the run when the machine has room."
        write_status(run, state="failed", message=message)
        raise MedImageError(message) from exc
    return "running"


def resume_refusal(run: Path) -> str:
    """Why the run cannot be continued ("" when it can). A job without last.keras builds a fresh model and trains it
    from epoch 0, so resuming a run that holds a model but no last.keras would overwrite that model: an adapted run
    (made by `adapt`, never trained) or one whose last checkpoint is gone."""
    run = Path(run)
    parent = read_status(run).get("parent")
    if parent:
        return (f"{run.name} was made by adapting {parent}, not by training, so there is no training to continue. Adapt "
                f"{parent} again, or train a new run.")
    if not (run / "last.keras").exists() and any((run / name).exists() for name in ("best.keras", "final.keras")):
        return (f"{run.name} holds a trained model but no last.keras to continue from: training would start over and "
                "overwrite it. Train a new run instead.")
    return ""


def resume(run: Path, max_running: int = DEFAULT_MAX_RUNNING, extend: int = 0) -> str:
    """Queue a stopped, failed or interrupted run again; it continues from last.keras, `extend` epochs longer (how a
    completed run goes on). Refused (MedImageError, the run untouched, no request left) where `resume_refusal` gives a
    reason."""
    run = Path(run)
    if reason := resume_refusal(run):
        raise MedImageError(reason)
    if extend:
        request(run, extend=extend)
    (run / ".claimed").unlink(missing_ok=True)
    write_status(run, state="queued", message="")
    return start(run, max_running)


def start_next_queued(runs_dir: Path | None = None, max_running: int = DEFAULT_MAX_RUNNING) -> Path | None:
    """Start the oldest queued run if a slot is free (jobs call this as they end)."""
    runs_dir = Path(runs_dir or models_dir())
    for run in sorted(p for p in runs_dir.iterdir() if p.is_dir()):
        if read_status(run).get("state") == "queued" and not (run / ".claimed").exists():
            try:
                return run if start(run, max_running) == "running" else None
            except MedImageError:  # marked failed with the reason; the job handing its slot on ends normally
                return None
    return None
