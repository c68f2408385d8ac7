"""The Ray backend against a real two-node cluster on loopback (`ray start`), and the options of `lrd run`.

The cluster's numbers must equal the local backend's bit for bit: a group is the
same vmapped program wherever it runs. A worker killed mid-task is retried; a group
whose worker dies every time is recorded as failed, and rerunning retries only it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import THREE_GROUPS, comparable, lrd

from lrd import store
from lrd.cli import main
from lrd.schema import Results

RAY = Path(sys.executable).with_name("ray")  # the `ray` command of this environment: its workers import this lrd
TASK_TITLE = b"ray::_train_on_ray"  # the process title of a Ray worker while it runs a group


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes_in(sessions: list[int]) -> list[int]:
    """Pids of the processes in these sessions (Ray's workers have process groups of their own)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                alive = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
                if alive and os.getsid(int(entry.name)) in sessions:
                    found.append(int(entry.name))
            except (OSError, ProcessLookupError):
                pass
    return found


def signal_all(sessions: list[int], sig: int) -> None:
    for pid in processes_in(sessions):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


class Cluster:
    def __init__(self, address: str, sessions: list[int]):
        self.address, self.sessions = address, sessions

    def task_workers(self) -> list[int]:
        """Pids of this cluster's worker processes that are running a group right now."""
        running = []
        for pid in processes_in(self.sessions):
            try:
                if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(TASK_TITLE):
                    running.append(pid)
            except OSError:
                pass
        return running


@pytest.fixture(scope="module")
def cluster(cache_dir):
    """A head node and a worker node (1 CPU each) on 127.0.0.1, stopped at the end whatever happens.

    Each `ray start` runs in a session of its own, which every process of its node
    inherits (GCS, raylet, workers), so the teardown stops exactly this cluster.
    Ray's sockets live in a short temporary folder (a Unix socket path has at most 107 bytes).
    The nodes and every `lrd run` of this module share a token of their own (Ray's token
    authentication), whatever ~/.ray holds.
    """
    pytest.importorskip("ray")
    temp = Path(tempfile.mkdtemp(prefix="lrdray-", dir="/tmp"))
    sessions: list[int] = []
    environment = pytest.MonkeyPatch()
    environment.setenv("RAY_AUTH_MODE", "token")
    environment.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))
    try:
        port = free_port()
        address = f"127.0.0.1:{port}"
        head = ["--head", f"--port={port}", "--include-dashboard=false"]
        for role in (head, [f"--address={address}"]):
            node = [
                "--node-ip-address=127.0.0.1",
                "--num-cpus=1",
                f"--temp-dir={temp}",
                "--disable-usage-stats",
                *(f"--{name}={free_port()}" for name in NODE_PORTS),
            ]
            proc = subprocess.Popen(
                [str(RAY), "start", *role, *node],
                start_new_session=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            sessions.append(proc.pid)
            out, _ = proc.communicate(timeout=120)
            assert proc.returncode == 0, out
        wait_for_nodes(address, 2)
        yield Cluster(address, sessions)
    finally:
        signal_all(sessions, signal.SIGTERM)
        deadline = time.monotonic() + 3
        while processes_in(sessions) and time.monotonic() < deadline:
            time.sleep(0.1)
        signal_all(sessions, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)
        environment.undo()


NODE_PORTS = (
    "node-manager-port",
    "object-manager-port",
    "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port",
    "runtime-env-agent-port",
    "metrics-export-port",
)


def wait_for_nodes(address: str, n: int) -> None:
    script = f"""
import time, ray
ray.init(address={address!r}, logging_level="ERROR")
deadline = time.monotonic() + 60
while sum(node["Alive"] for node in ray.nodes()) < {n}:
    assert time.monotonic() < deadline, ray.nodes()
    time.sleep(0.2)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache_dir) -> Results:
    """The three-group experiment on the local backend."""
    work = tmp_path_factory.mktemp("local")
    (work / "exp.toml").write_text(THREE_GROUPS)
    proc = lrd("run", "exp.toml", "--out", "out", "--no-plot", cwd=work)
    assert proc.returncode == 0, proc.stderr
    return store.load(work / "out")


def assert_same_tables(results: Results, reference: Results) -> None:
    for got, expected in zip(comparable(results), comparable(reference)):
        pd.testing.assert_frame_equal(got, expected, check_exact=True)


def test_a_two_node_cluster_gives_the_local_tables(cluster, reference, tmp_path):
    (tmp_path / "exp.toml").write_text(THREE_GROUPS)
    proc = lrd(
        "run", "exp.toml", "--out", "out", "--no-plot", "--backend", "ray", "--address", cluster.address, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert "6 runs computed, 0 already done, 0 diverged, 0 failed" in proc.stdout
    assert_same_tables(store.load(tmp_path / "out"), reference)


def test_a_killed_worker_is_retried_and_no_run_is_lost_or_repeated(cluster, reference, tmp_path):
    (tmp_path / "exp.toml").write_text(THREE_GROUPS)
    command = [
        sys.executable,
        "-m",
        "lrd.cli",
        "run",
        "exp.toml",
        "--out",
        "out",
        "--no-plot",
        "--backend",
        "ray",
        "--address",
        cluster.address,
    ]
    proc = subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    lines: list[str] = []

    def read():
        for line in proc.stdout:
            lines.append(line)

    try:
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        # once the driver says a group trains, kill every worker that runs a group
        deadline = time.monotonic() + 120
        while not any(" training " in line for line in lines):
            assert time.monotonic() < deadline and proc.poll() is None, "no group started"
            time.sleep(0.02)
        for pid in cluster.task_workers():
            os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=240)
        reader.join()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()
    out = "".join(lines)
    assert proc.returncode == 0, out
    assert "(attempt 2: its worker died)" in out, out
    assert "6 runs computed, 0 already done, 0 diverged, 0 failed" in out
    assert sorted(store.stored_runs(tmp_path / "out")) == sorted(reference.runs["run"])
    assert not (tmp_path / "out" / "runs").exists()  # packed, no temporary folder left
    assert_same_tables(store.load(tmp_path / "out"), reference)


FRAGILE = '''\
"""delayed_recall whose worker process dies while tracing at gap 6, as long as a marker file exists."""

import os
import signal

from lrd.tasks import register
from lrd.tasks.delayed_recall import DelayedRecall


@register
class Fragile(DelayedRecall):
    name = "fragile"

    def sample(self, key, batch_size):
        if self.gap == 6 and os.path.exists({marker!r}):
            os.kill(os.getpid(), signal.SIGKILL)
        return super().sample(key, batch_size)
'''


def test_a_group_whose_worker_always_dies_is_recorded_failed_then_retried(cluster, tmp_path):
    marker = tmp_path / "die"
    marker.touch()
    (tmp_path / "fragile.py").write_text(FRAGILE.format(marker=str(marker)))
    (tmp_path / "exp.toml").write_text(
        THREE_GROUPS.replace('name = "tiny"', 'name = "fragile"\nimports = ["fragile.py"]')
        .replace('name = "delayed_recall"\ngap = 4', 'name = "fragile"\ngap = [4, 6]')
        .replace('cell = ["rnn", "lstm", "gru"]', 'cell = "rnn"')
    )
    ray_run = ("run", "exp.toml", "--out", "out", "--no-plot", "--backend", "ray", "--address", cluster.address)
    proc = lrd(*ray_run, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "2 runs computed, 0 already done, 0 diverged, 2 failed" in proc.stdout
    assert "lrd: 2 runs failed (see the error column of the runs table); run the same command to retry" in proc.stderr
    runs, curves, grad_norms, *_ = store.load(tmp_path / "out")
    failed = runs[runs["status"] == "failed"]
    assert sorted(failed["gap"]) == [6, 6] and sorted(failed["seed"]) == [0, 1]
    assert (
        failed["error"].str.contains("WorkerCrashedError").all()
        and failed["error"].str.contains("after 2 retries").all()
    )
    assert set(runs.loc[runs["gap"] == 4, "status"]) == {"done"} and runs.loc[runs["gap"] == 4, "error"].isna().all()
    assert set(curves["run"]) == set(grad_norms["run"]) == set(runs.loc[runs["gap"] == 4, "run"])

    assert not (tmp_path / "out" / "tables").exists()  # runs failed: not packed yet
    done_before = {run_id: store.read_run(tmp_path / "out", run_id) for run_id in runs.loc[runs["gap"] == 4, "run"]}
    marker.unlink()
    proc = lrd(*ray_run, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "2 runs computed, 2 already done, 0 diverged, 0 failed" in proc.stdout
    assert "gap=4" not in proc.stdout  # only the failed group trained again
    runs = store.load(tmp_path / "out").runs
    assert set(runs["status"]) == {"done"} and len(runs) == 4 and runs["error"].isna().all()
    for run_id, tables in done_before.items():  # not recomputed: packed as they were
        for name, table in store.read_run(tmp_path / "out", run_id).items():
            pd.testing.assert_frame_equal(table, tables[name], check_exact=True)
    assert not (tmp_path / "out" / "runs").exists()


# --- options --------------------------------------------------------------------------------
def test_the_ray_backend_without_ray_says_how_to_install_it(write_experiment, monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    assert main(["run", str(write_experiment(THREE_GROUPS)), "--out", str(tmp_path / "out"), "--backend", "ray"]) == 2
    assert capsys.readouterr().err == "lrd: error: the ray backend needs Ray: pip install 'lrd[ray]'\n"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "options, message",
    [
        (["--address", "127.0.0.1:6379"], "--address needs --backend ray"),
        (["--backend", "local", "--address", "127.0.0.1:6379"], "--address needs --backend ray"),
    ],
)
def test_bad_option_combinations_are_one_line_errors(options, message, write_experiment, capsys, tmp_path):
    assert main(["run", str(write_experiment(THREE_GROUPS)), "--out", str(tmp_path / "out"), *options]) == 2
    assert capsys.readouterr().err == f"lrd: error: {message}\n"
    assert not (tmp_path / "out").exists()
