"""lrd export --mlflow against a real MLflow tracking server started on 127.0.0.1 with a local store."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from lrd.cli import main
from lrd.store import load

REPO = Path(__file__).resolve().parents[1]
STUDY = REPO / "results" / "lookahead"  # a committed study of 12 runs with figures

mlflow = pytest.importorskip("mlflow", reason="the [mlflow] extra: pip install -e '.[mlflow]' (.ci/run installs it)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``mlflow server`` with a SQLite backend store and a local artifact folder; its URI."""
    root = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "a")]
    command += ["--workers", "1"]
    with open(root / "server.log", "w") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
        time.sleep(0.5)
    yield uri
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def _runs(uri: str, experiment: str) -> pd.DataFrame:
    """The runs of an MLflow experiment: id, name, tags and parameters; empty when it does not exist."""
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return pd.DataFrame()
    rows = []
    for run in client.search_runs([found.experiment_id], max_results=1000):
        rows.append({"run_id": run.info.run_id, "name": run.info.run_name, **run.data.tags, "params": run.data.params})
    return pd.DataFrame(rows)


def test_export_logs_every_run_once_with_params_curves_and_artifacts(server, tmp_path, capsys):
    study = tmp_path / "lookahead"
    shutil.copytree(STUDY, study)
    stored = load(study)
    assert main(["export", str(study), "--mlflow", server]) == 0
    assert f"{len(stored.runs)} runs logged to {server}" in capsys.readouterr().out
    name = stored.runs["experiment"].iloc[0]
    runs = _runs(server, name)
    children = runs[runs["lrd.run"].notna()]
    assert sorted(children["name"]) == sorted(stored.runs["run"])
    assert (children["lrd.complete"] == "1").all()

    client = mlflow.tracking.MlflowClient(tracking_uri=server)
    first = stored.runs.iloc[0]
    child = client.get_run(children.loc[children["name"] == first["run"], "run_id"].iloc[0])
    assert child.data.params["gap"] == str(first["gap"]) and child.data.params["model"] == first["model"]
    assert child.data.params["lr"] == str(first["lr"])
    assert child.data.metrics["final_metric"] == pytest.approx(float(first["final_metric"]))
    history = client.get_metric_history(child.info.run_id, "curve_loss")
    curve = stored.curves[stored.curves["run"] == first["run"]]
    assert [m.step for m in history] == curve["step"].tolist()
    assert [m.value for m in history] == pytest.approx(curve["loss"].tolist())
    parent_id = child.data.tags["mlflow.parentRunId"]
    artifacts = {a.path for a in client.list_artifacts(parent_id)} | {
        a.path for a in client.list_artifacts(parent_id, "figures")
    }
    assert "summary.csv" in artifacts and "experiment.toml" in artifacts
    assert {f"figures/{p.name}" for p in (study / "figures").glob("*.png")} <= artifacts

    # a second export adds nothing
    assert main(["export", str(study), "--mlflow", server]) == 0
    again = capsys.readouterr().out
    assert f"0 runs logged to {server}, experiment {name!r}; {len(stored.runs)} there already" in again
    assert len(_runs(server, name)) == len(runs)


def test_an_export_that_fails_midway_leaves_nothing_half_logged(server, tmp_path, capsys, monkeypatch):
    study = tmp_path / "lookahead"
    shutil.copytree(STUDY, study)
    runs = load(study).runs  # under another experiment name: an MLflow experiment of its own
    monkeypatch.setattr(
        "lrd.cli.load_results",
        lambda out_dir, all_runs=False: load(out_dir)._replace(runs=runs.assign(experiment="lookahead-failing")),
    )
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    real = MlflowClient.log_batch
    calls = {"n": 0}

    def failing(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # inside the second run: its parameters are logged, its metrics are not
            raise MlflowException("the server refused the request (simulated)")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_batch", failing)
    assert main(["export", str(study), "--mlflow", server]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith(f"lrd: error: {server}: the MLflow server refused")
    partial = _runs(server, "lookahead-failing")
    assert (partial["lrd.complete"] == "1").all()  # the run being logged was deleted
    assert len(partial[partial["lrd.run"].notna()]) == 1

    monkeypatch.setattr(MlflowClient, "log_batch", real)
    assert main(["export", str(study), "--mlflow", server]) == 0
    assert f"{len(runs) - 1} runs logged" in capsys.readouterr().out
    whole = _runs(server, "lookahead-failing")
    assert sorted(whole.loc[whole["lrd.run"].notna(), "name"]) == sorted(runs["run"])


def test_a_server_that_is_down_is_one_line_and_exit_2(tmp_path, capsys):
    study = tmp_path / "lookahead"
    shutil.copytree(STUDY, study)
    uri = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    assert main(["export", str(study), "--mlflow", uri]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"lrd: error: {uri}: the MLflow server does not answer (is it running, and is the address right?)"
