"""Multi-worker training for real: two worker processes on loopback ports under MultiWorkerMirroredStrategy.

One test walks the whole life of a cluster job, because each phase needs the previous one: both
workers step in lockstep, only the chief writes the run folder, a killed worker fails the job with
a plain message within a timeout instead of hanging, and the same command resumes it from its
checkpoint to the end.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.cluster import role, tf_config
from core.errors import MedImageError
from core.paths import PROJECT_ROOT
from core.runs import read_metrics, read_status

EPOCHS = 5
FAIL_WITHIN_S = 120  # a lost worker must end the job within this; measured ~10 s


def test_roles_from_tf_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert role().is_chief and not role().distributed  # a lone process
    hosts = ["a:1", "b:1", "c:1"]
    monkeypatch.setenv("TF_CONFIG", tf_config(hosts, 0))
    assert role().is_chief and role().workers == 3
    monkeypatch.setenv("TF_CONFIG", tf_config(hosts, 2))
    assert not role().is_chief and str(role()) == "worker 2"
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:1"]}, "task": {"type": "worker", "index": 0}}))
    assert not role().is_chief and role().workers == 2  # with a chief task, worker 0 is not the chief
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(MedImageError, match="TF_CONFIG is not valid"):
        role()


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


_STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_orphans():
    """A failed assertion must not leave workers training in the background."""
    yield
    for proc in _STARTED:
        if proc.poll() is None:
            proc.kill()
    _STARTED.clear()


def _start_cluster(run: Path, tmp: Path, tag: str) -> list[subprocess.Popen]:
    hosts = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    procs = []
    for index in range(2):
        scratch_root = tmp / f"{tag}-tmp-{index}"
        scratch_root.mkdir()
        env = {**os.environ, "TF_CONFIG": tf_config(hosts, index), "TMPDIR": str(scratch_root), "TF_CPP_MIN_LOG_LEVEL": "2"}
        out = open(tmp / f"{tag}-worker-{index}.out", "w")  # noqa: SIM115 - closed when the process ends
        procs.append(subprocess.Popen([sys.executable, "-m", "core", "train", "--run", str(run)], cwd=PROJECT_ROOT, env=env,
                                      stdout=out, stderr=subprocess.STDOUT))
    _STARTED.extend(procs)
    return procs


def _echo(tmp: Path, tag: str, index: int) -> dict[int, str]:
    """Epoch -> 'loss weights-digest' as the worker printed it (ClusterEcho)."""
    text = (tmp / f"{tag}-worker-{index}.out").read_text()
    return {int(m[1]): m[2] for m in re.finditer(r"^\[worker \d[^\]]*\] epoch (\d+) (loss \S+ weights \w+)$", text, re.M)}


def _outputs(tmp: Path, tag: str) -> str:
    """Both workers' output without TensorFlow's start-up chatter, for failure messages."""
    noise = re.compile(r"^(I0000|W0000|E0000|WARNING: All log)|cuda|oneDNN|AVX")
    return "\n".join(f"--- worker {i}:\n" + "\n".join(line for line in (tmp / f"{tag}-worker-{i}.out").read_text().splitlines()
                                                      if not noise.search(line))[-2500:] for i in range(2))


def _wait(proc: subprocess.Popen, timeout: float) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"worker still running after {timeout} s: the cluster hung")


def test_multiworker_lockstep_chief_only_kill_and_resume(tmp_path: Path) -> None:
    # the README's commands: create the run folder, then start the same command on every worker
    created = subprocess.run([sys.executable, "-m", "core", "train", "--data", "demo", "--image-size", "64", "--epochs", str(EPOCHS),
                              "--batch-size", "16", "--create-only", "--json"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert created.returncode == 0, created.stderr[-2000:]
    run = Path(json.loads(created.stdout)["run"])
    assert read_status(run)["state"] == "queued" and not (run / "metrics.csv").exists()

    # 1. two workers train; kill worker 1 once the chief has written epoch 2
    chief, worker = _start_cluster(run, tmp_path, "first")
    seen_pids, scratch_seen = set(), False
    deadline = time.time() + 300
    while read_status(run).get("epoch", 0) < 2:
        assert chief.poll() is None and worker.poll() is None, _outputs(tmp_path, "first")
        assert time.time() < deadline, "the cluster did not reach epoch 2"
        seen_pids.add(read_status(run).get("pid"))
        scratch_seen |= any((tmp_path / "first-tmp-1").glob(f"medimage-{run.name}-*/status.json"))
        time.sleep(0.2)
    # only the chief writes the run folder: every status it ever showed is the chief's; worker 1 wrote a scratch copy
    assert seen_pids <= {None, chief.pid}
    assert scratch_seen and not any((tmp_path / "first-tmp-0").glob(f"medimage-{run.name}-*"))
    worker.kill()
    killed_at = time.time()
    assert _wait(chief, FAIL_WITHIN_S) == 1  # the CLI exits non-zero for a failed job
    status = read_status(run)
    assert status["state"] == "failed" and status["pid"] == chief.pid
    assert "A worker of the cluster stopped responding" in status["message"], status["message"]
    assert time.time() - killed_at < FAIL_WITHIN_S
    stopped_at = int(status["epoch"])
    first_chief, first_worker = _echo(tmp_path, "first", 0), _echo(tmp_path, "first", 1)
    assert len(first_worker) >= 1  # the chief may write epoch 2 before worker 1 prints it
    for epoch, line in first_worker.items():  # lockstep: same loss and bit-identical weights after every epoch
        assert first_chief[epoch] == line

    # 2. the same command on both workers resumes from the chief's last checkpoint and finishes
    chief, worker = _start_cluster(run, tmp_path, "resume")
    assert _wait(chief, 300) == 0 and _wait(worker, 60) == 0, _outputs(tmp_path, "resume")
    status = read_status(run)
    assert status["state"] == "completed" and status["epoch"] == EPOCHS and status["replicas"] == 2
    assert read_metrics(run)["epoch"].tolist() == list(range(1, EPOCHS + 1))
    resumed_chief, resumed_worker = _echo(tmp_path, "resume", 0), _echo(tmp_path, "resume", 1)
    assert sorted(resumed_chief) == list(range(stopped_at + 1, EPOCHS + 1)) and resumed_chief == resumed_worker
    assert (run / "best.keras").exists() and (run / "final.keras").exists()
    assert not any((tmp_path / "resume-tmp-1").glob("medimage-*"))  # worker 1's scratch copy is removed when it ends
