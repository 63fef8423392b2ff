"""Run folders: the one API for what a training job writes and what pages read.

A run is a folder under the models directory:
    config.json     what the job was started with
    status.json     state, pid, host, heartbeat, epoch, best metric, ETA, message
    metrics.csv     one row per epoch;  batches.csv: one row every N batches
    control.json    requests from the page (stop now / after epoch, extend, new LR), consumed by the job
    log.txt         the job's output
    best.keras, last.keras (with optimizer state), final.keras
Every file is replaced atomically, so a reader never sees half of one.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from core.atomic import write_json
from core.paths import models_dir

FINAL_STATES = ("completed", "stopped", "failed", "interrupted")
HEARTBEAT_TIMEOUT_S = 120.0
MODEL_FILES = ("best.keras", "final.keras", "last.keras")  # the order a run's model is looked up in


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def model_file(run: Path) -> Path | None:
    """The model file a run predicts with: its best checkpoint, else its final or last model; None before its first epoch."""
    return next((Path(run) / name for name in MODEL_FILES if (Path(run) / name).exists()), None)


def create_run(config: dict[str, Any], runs_dir: Path | None = None) -> Path:
    """A new, uniquely named run folder holding config.json and a 'queued' status.

    The folder is made with an exclusive mkdir, so two starts at the same moment get two runs.
    """
    from core.errors import MedImageError

    runs_dir = Path(runs_dir or models_dir())
    model = str(config.get("model", {}).get("name", "model"))
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
        while True:
            name = f"{datetime.now():%Y%m%d-%H%M%S}-{model}-{secrets.token_hex(2)}"
            try:
                (runs_dir / name).mkdir()
                break
            except FileExistsError:
                continue
        run = runs_dir / name
        write_json(run / "config.json", config)
        write_status(run, state="queued", created=now_iso())
    except OSError as exc:  # read-only disk, disk full, a file where the folder should be
        raise MedImageError(f"Cannot create a run folder in {runs_dir} ({exc.strerror or exc}). "
                            "Free some space or set MEDIMAGE_MODELS_DIR to a writable folder.") from exc
    return run


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def read_status(run: Path) -> dict[str, Any]:
    """status.json, or a status that says what is wrong with it (never raises)."""
    try:
        status = read_json(Path(run) / "status.json")
        if not isinstance(status, dict):
            raise ValueError("not an object")
        return status
    except FileNotFoundError:
        return {"state": "unknown", "message": "status.json is missing"}
    except (OSError, ValueError) as exc:
        return {"state": "unknown", "message": f"status.json is unreadable ({exc})"}


def write_status(run: Path, **changes: Any) -> dict[str, Any]:
    """Merge changes into status.json (atomically) and return the new status."""
    status = read_status(run)
    if status.get("state") == "unknown":
        status = {}
    status.update(changes)
    write_json(Path(run) / "status.json", status)
    return status


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (killed, not yet reaped by its parent) is not alive
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1] != "Z"
    except OSError:
        return True


def effective_state(status: dict[str, Any]) -> str:
    """The state to show: a 'running' job whose process is gone (or silent too long) is 'interrupted'."""
    state = status.get("state", "unknown")
    if state != "running":
        return state
    if status.get("host") == socket.gethostname() and status.get("pid") and not _pid_alive(int(status["pid"])):
        return "interrupted"
    if time.time() - float(status.get("heartbeat_ts", time.time())) > HEARTBEAT_TIMEOUT_S:
        return "interrupted"
    return state


def request(run: Path, **changes: Any) -> None:
    """Ask the job for something: stop='now'|'after_epoch', extend=N, lr=float. Merged with pending requests."""
    path = Path(run) / "control.json"
    try:
        pending = read_json(path)
    except (OSError, ValueError):
        pending = {}
    if "extend" in changes and "extend" in pending:
        changes["extend"] = int(changes["extend"]) + int(pending["extend"])
    write_json(path, {**pending, **changes})


def take_requests(run: Path) -> dict[str, Any]:
    """The pending requests, removed from the folder (the job calls this)."""
    path = Path(run) / "control.json"
    taken = path.with_name(f".control-{os.getpid()}.json")
    try:
        os.replace(path, taken)
    except FileNotFoundError:
        return {}
    try:
        return read_json(taken)
    except (OSError, ValueError):
        return {}
    finally:
        taken.unlink(missing_ok=True)


def read_metrics(run: Path, name: str = "metrics.csv") -> pd.DataFrame:
    try:
        return pd.read_csv(Path(run) / name)
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return pd.DataFrame()
    except (OSError, ValueError, pd.errors.ParserError):
        return pd.DataFrame()


def _metrics_problem(run: Path) -> str:
    """What is wrong with a run's metrics.csv, or '' (absent is fine: the job has not finished an epoch)."""
    path = Path(run) / "metrics.csv"
    if not path.exists():
        return ""
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        return f"metrics.csv is unreadable ({str(exc).splitlines()[0][:80]})"
    return "" if "epoch" in frame.columns else "metrics.csv has no epoch column"


def _run_folders(runs_dir: Path | None) -> list[Path]:
    """Run folders, newest first (names start with their creation time)."""
    runs_dir = Path(runs_dir or models_dir())
    return sorted((p for p in runs_dir.iterdir() if p.is_dir() and (p / "config.json").exists()), reverse=True)


def latest_run(runs_dir: Path | None = None) -> tuple[str, str] | None:
    """The newest run's name and state, reading that run alone: the sidebar shows it on every page run, where
    list_runs would read every run's status, config and metrics."""
    folders = _run_folders(runs_dir)
    return (folders[0].name, effective_state(read_status(folders[0]))) if folders else None


def list_runs(runs_dir: Path | None = None) -> pd.DataFrame:
    """One row per run folder, newest first: name, state, model, dataset, epoch, best, message, and `derived` (how a
    run made from another came about, e.g. "adapted from RUN to hospital-b"; empty for a trained run)."""
    rows = []
    for run in _run_folders(runs_dir):
        status = read_status(run)
        try:
            config = read_json(run / "config.json")
        except (OSError, ValueError) as exc:
            config = {"error": f"config.json is unreadable ({exc})"}
        problems = [status.get("message", "") if status.get("state") == "unknown" else "", config.get("error", ""), _metrics_problem(run)]
        rows.append({
            "run": run.name,
            "state": effective_state(status),
            "model": config.get("model", {}).get("name", "?"),
            "dataset": config.get("data", "?"),
            "epoch": f"{status.get('epoch', 0)}/{status.get('epochs', config.get('epochs', '?'))}",
            "best": status.get("best_value"),
            "started": status.get("started", status.get("created", "")),
            "message": "; ".join(p for p in problems if p) or status.get("message", ""),
            "derived": derived_from(status),
            "path": str(run),
        })
    return pd.DataFrame(rows, columns=["run", "state", "model", "dataset", "epoch", "best", "started", "message", "derived", "path"])


def derived_from(status: dict[str, Any]) -> str:
    """How a run made from another came about, for run lists and pickers ("" for a trained run): an adapted run's
    name says nothing of it, and picking it for the parent (or the other way) on Predict is easy."""
    parent = status.get("parent")
    if not parent:
        return ""
    folder = (status.get("adaptation") or {}).get("folder")
    return f"adapted from {parent}" + (f" to {Path(folder).name}" if folder else "")


def _flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as one level ("model.alpha"); lists as text, so they compare and show as cells."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = ", ".join(map(str, value)) if isinstance(value, list | tuple) else value
    return out


def settings_that_differ(runs: dict[str, Path]) -> pd.DataFrame:
    """The config settings on which the runs disagree, one row per setting and one column per run.

    Comparing runs' scores says which did better; this says what was changed, without reading config.json side by
    side. A training option an older run's config lacks (made before the option existed) counts as its default, which
    is what that run trained with (options are added switched off); other keys one run lacks (an adapted run's
    lineage) show empty. No augmentation shows as "off"."""
    from core.train import TrainConfig  # the defaults; pages that compare runs have TensorFlow loaded already

    flat = {}
    for label, run in runs.items():
        try:
            config = read_json(run / "config.json")
            config = {**config, **TrainConfig.from_dict(config).to_dict()}
        except (OSError, ValueError, TypeError):  # a run folder being deleted, or a hand-edited file: say so in its column
            config = {"config.json": "unreadable"}
        if config.get("augment") is None:
            config["augment"] = "off"
        flat[label] = _flat(config)
    table = pd.DataFrame(flat)
    if table.empty:
        return table
    differ = table.astype(str).nunique(axis=1, dropna=False) > 1
    return table[differ].astype(object).where(table[differ].notna(), "").rename_axis("setting")


def _seed_groups(differ: pd.DataFrame) -> dict[str, str]:
    """Each run's group: runs whose settings differ in the seed alone form one, named by the settings that set it
    apart ("cosine=True; epochs=12")."""
    rest = differ.drop(index="seed", errors="ignore")
    if rest.empty:
        return {run: "same settings" for run in differ.columns}
    return {run: "; ".join(f"{setting}={value}" for setting, value in rest[run].items()) for run in differ.columns}


def over_seeds(scores: pd.DataFrame, differ: pd.DataFrame) -> pd.DataFrame:
    """Mean ± sd of each score over the runs trained alike but for the seed, for each group of two runs or more.

    scores: one row per run (its label), numeric columns; differ: settings_that_differ of the same runs. A variant is
    judged by its group's mean against another's, and a difference smaller than the seeds' spread is noise."""
    groups = pd.Series(_seed_groups(differ))
    rows = []
    for group, members in groups.groupby(groups, sort=False):
        runs = [run for run in members.index if run in scores.index]
        if len(runs) < 2:
            continue
        seeds = ", ".join(str(differ.at["seed", run]) for run in runs) if "seed" in differ.index else "the same"
        row: dict[str, Any] = {"group": group, "runs": len(runs), "seeds": seeds}
        for column in scores.columns:
            values = pd.to_numeric(scores.loc[runs, column], errors="coerce").dropna()
            if len(values) >= 2:
                row[column] = f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"
        rows.append(row)
    return pd.DataFrame(rows).set_index("group") if rows else pd.DataFrame()


def delete_run(run: Path) -> None:
    """Remove a run folder; a running job must be stopped first."""
    import shutil

    from core.errors import MedImageError

    if effective_state(read_status(run)) in ("running",):
        raise MedImageError("This run is still training. Stop it first, then delete it.")
    shutil.rmtree(run)


def run_rows(run: Path, config: dict[str, Any], table: pd.DataFrame) -> pd.DataFrame:
    """The dataset table as this run splits it: a run with its own rows.csv (a recipe's patient-grouped
    split, a fold, a preset) keeps only those images, with that file's split."""
    if not config.get("rows"):
        return table
    override = pd.read_csv(Path(run) / config["rows"])
    return table.drop(columns="split").merge(override, on="path", how="inner")


def has_model(run: Path) -> bool:
    """Whether the run has a model to predict with (its own, or every fold's for a K-fold run)."""
    run = Path(run)
    return model_file(run) is not None or any((f / "best.keras").exists() for f in run.glob("fold-*"))


def can_predict(run: Path) -> bool:
    """A run Evaluate and Predict can use: readable config, known classes, and a model file."""
    try:
        read_json(Path(run) / "config.json")
    except (OSError, ValueError):
        return False
    return bool(read_status(run).get("classes")) and has_model(run)
