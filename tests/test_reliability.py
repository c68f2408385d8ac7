"""A careless user and a hostile environment (issue 16): Ctrl-C, closed pipes, bad --out, failed runs, big grids."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import TINY, comparable, lrd, unpack

from lrd import backends, cli, interrupt, store
from lrd.cli import main
from lrd.experiment import load_experiment
from lrd.schema import DERIVED_COLUMNS
from lrd.sweep import group_memory, plan

WORKTREE = str(Path(__file__).resolve().parents[1])
INTERRUPTED = "lrd: interrupted; finished runs are saved, run the same command to resume"


def env() -> dict[str, str]:
    """The subprocesses run this worktree's lrd."""
    return {**os.environ, "PYTHONPATH": WORKTREE}


def start(*args: str, cwd: Path, stdout=subprocess.PIPE, own_group: bool = False) -> subprocess.Popen:
    """``lrd ARGS`` through the installed command's first frame (lrd.__main__); ``own_group``: a new process group."""
    return subprocess.Popen(
        [sys.executable, "-m", "lrd", *args],
        cwd=cwd,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        env=env(),
        start_new_session=own_group,
    )


def assert_same_tables(out: Path, reference: Path) -> None:
    for got, want in zip(comparable(store.load(out)), comparable(store.load(reference))):
        pd.testing.assert_frame_equal(got, want, check_exact=True)


def assert_runs_match_reference(out: Path, reference: Path) -> None:
    """Every run stored in ``out`` is complete and equals the undisturbed run's tables."""
    ref = store.load(reference)
    for run_id in store.stored_runs(out):
        stored = store.read_run(out, run_id)
        for name, table in zip(store.TABLES, comparable(ref)):
            got = stored[name]
            want = table[table["run"] == run_id].reset_index(drop=True)
            if name == "run":  # store.load adds the error to every run and derives solved (and more) at read time
                want = want.drop(columns=["error", *DERIVED_COLUMNS])
            pd.testing.assert_frame_equal(got.drop(columns=["wall_time_s"], errors="ignore"), want, check_exact=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache_dir) -> Path:
    """TINY (two groups, four runs) run once, undisturbed, through the command."""
    work = tmp_path_factory.mktemp("reference")
    (work / "exp.toml").write_text(TINY)
    proc = lrd("run", "exp.toml", "--out", "out", cwd=work)
    assert proc.returncode == 0, proc.stderr
    return work / "out"


# --- Ctrl-C ----------------------------------------------------------------------------------
def test_a_swallowed_keyboard_interrupt_is_raised_again_at_the_next_check(capsys):
    class RaisesInDel:
        def __del__(self):
            signal.raise_signal(signal.SIGINT)  # the handler's KeyboardInterrupt lands in __del__: swallowed

    reached = False
    before = signal.getsignal(signal.SIGINT)  # Python's default, or SIG_IGN for a run started in the background
    with pytest.raises(KeyboardInterrupt), interrupt.stop_on_sigint():
        RaisesInDel()  # deleted at once
        reached = True
    assert reached  # the exception was swallowed where it landed ...
    assert "Exception ignored" not in capsys.readouterr().err  # ... silently, and raised on leaving the block
    assert signal.getsignal(signal.SIGINT) is before  # the handler it found is back


GC_SIGINT = '''\
"""A Ctrl-C that lands in a garbage-collection callback (as JAX's does), once the file GO exists."""

import gc
import os
import signal

fired = []


def _callback(phase, info):
    if not fired and os.path.exists({go!r}):
        fired.append(True)
        signal.raise_signal(signal.SIGINT)


gc.callbacks.append(_callback)
'''


def wait_for_line(proc: subprocess.Popen, words: str, timeout: float = 180) -> list[str]:
    lines, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if words in line:
            return lines
    raise AssertionError(f"no line with {words!r} in {lines}")


@pytest.mark.parametrize("moment", ["first group training", "after the first group", "in a gc callback"])
def test_ctrl_c_stops_the_sweep_with_exit_130_and_keeps_finished_runs(moment, reference, tmp_path, cache_dir):
    text = TINY
    if moment == "in a gc callback":
        (tmp_path / "gc_sigint.py").write_text(GC_SIGINT.format(go=str(tmp_path / "GO")))
        text = 'imports = ["gc_sigint.py"]\n' + TINY
    (tmp_path / "exp.toml").write_text(text)
    proc = start("run", "exp.toml", "--out", "out", "--no-plot", cwd=tmp_path)
    if moment == "first group training":
        wait_for_line(proc, "training")
        proc.send_signal(signal.SIGINT)
    elif moment == "after the first group":
        wait_for_line(proc, "seed 1: metric")
        proc.send_signal(signal.SIGINT)
    else:
        wait_for_line(proc, "training")
        (tmp_path / "GO").touch()
    stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 130, stdout + stderr
    assert stderr.strip().splitlines() == [INTERRUPTED], stderr
    assert "runs computed" not in stdout  # the sweep stopped: no summary line
    assert len(store.completed_runs(tmp_path / "out")) < 4
    assert_runs_match_reference(tmp_path / "out", reference)

    if moment == "in a gc callback":
        (tmp_path / "GO").unlink()
    resumed = lrd("run", "exp.toml", "--out", "out", "--no-plot", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_tables(tmp_path / "out", reference)


def _sweep_in_its_own_group(work: Path) -> subprocess.Popen:
    return start("run", "exp.toml", "--out", "out", cwd=work, own_group=True)


def test_ctrl_c_at_ten_moments_of_a_real_sweep_ends_with_130_and_keeps_every_finished_run(
    reference, tmp_path, cache_dir
):
    """SIGINT to the process group, as a terminal sends it, at 10 evenly spaced moments of a whole
    ``lrd run`` (start-up and imports, compiling, training, writing, figures and report)."""
    (tmp_path / "whole").mkdir()
    (tmp_path / "whole" / "exp.toml").write_text(TINY)
    began = time.monotonic()
    whole = _sweep_in_its_own_group(tmp_path / "whole")
    _, stderr = whole.communicate(timeout=300)
    assert whole.returncode == 0, stderr  # with the compilation cache warm, as below
    duration = time.monotonic() - began
    outcomes = []
    for i in range(10):
        work = tmp_path / f"at{i}"
        work.mkdir()
        (work / "exp.toml").write_text(TINY)
        proc = _sweep_in_its_own_group(work)
        time.sleep(duration * (i + 0.5) / 10)
        finished_first = proc.poll() is not None  # the moment fell past its end (a loaded machine varies)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=300)
        outcomes.append(proc.returncode)
        assert proc.returncode in (130, 0), f"moment {i}: exit {proc.returncode}\n{stdout}{stderr}"
        # a process still running when the signal came ends with 130, unless its command was done (its last
        # line, the report's, printed): lrd then ignores SIGINT through Python's teardown, which lasts a second
        # or more, and exits 0. A run faster than the reference reaches it before the later moments (seen at 8)
        done = stdout.rstrip().splitlines()[-1:] == [f"report: {Path('out') / 'report.html'}"]
        assert proc.returncode == 130 or finished_first or done, f"moment {i}: Ctrl-C swallowed\n{stdout}{stderr}"
        if proc.returncode == 130:
            assert stderr.strip().splitlines() == [INTERRUPTED], f"moment {i}: {stderr}"
        if (work / "out").is_dir():
            checks = store.check_runs(work / "out")
            assert all(c.state == store.COMPLETE for c in checks.values()), f"moment {i}: {checks}"
            assert_runs_match_reference(work / "out", reference)
    assert outcomes.count(130) >= 7, outcomes  # the moments are within the sweep: nearly all interrupted it


# --- a stalled XLA computation (lrd.watchdog) ----------------------------------------------
STALLS_AT_SECOND_GROUP = """\
import sys, threading
import jax, jax.numpy as jnp, numpy as np
from lrd import watchdog
from lrd.cli import main
from lrd.train import Trainer

watchdog.STALL_S = 2.0
real_run, calls, never = Trainer.run, [], threading.Event()


def wait_forever(x):
    never.wait()
    return np.asarray(x)


def second_group_deadlocks(self, *args, **kwargs):
    calls.append(1)
    if len(calls) == 2:  # a computation whose result never comes, as in the XLA stall
        blocked = jax.jit(lambda x: jax.pure_callback(wait_forever, jax.ShapeDtypeStruct(x.shape, x.dtype), x))
        blocked(jnp.ones(2)).block_until_ready()
    return real_run(self, *args, **kwargs)


Trainer.run = second_group_deadlocks
sys.exit(main(["run", "exp.toml", "--out", "out", "--no-plot"]))
"""


def test_a_stalled_group_ends_the_sweep_with_exit_75_keeping_finished_runs(reference, tmp_path, cache_dir):
    (tmp_path / "exp.toml").write_text(TINY)
    stalled = subprocess.run(
        [sys.executable, "-c", STALLS_AT_SECOND_GROUP], cwd=tmp_path, capture_output=True, text=True, env=env()
    )
    assert stalled.returncode == 75, stalled.stderr
    assert stalled.stderr.strip().splitlines()[-1].startswith("lrd: the computation stopped"), stalled.stderr
    assert len(store.completed_runs(tmp_path / "out")) == 2  # the first group's runs, not the stalled group's
    resumed = lrd("run", "exp.toml", "--out", "out", "--no-plot", cwd=tmp_path)  # the same command resumes
    assert resumed.returncode == 0, resumed.stderr
    assert_same_tables(tmp_path / "out", reference)


# --- stdout closed early -------------------------------------------------------------------
def test_stdout_closed_early_does_not_stop_the_sweep(reference, tmp_path, cache_dir):
    (tmp_path / "exp.toml").write_text(TINY)
    proc = start("run", "exp.toml", "--out", "out", cwd=tmp_path)  # as `lrd run exp.toml --out out | head -1`
    first = proc.stdout.readline()
    proc.stdout.close()
    _, stderr = proc.communicate(timeout=180)
    assert "4 runs" in first
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr
    assert_same_tables(tmp_path / "out", reference)
    assert any((tmp_path / "out" / "figures").glob("*.png"))


# --- --out -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "out, words",
    [
        ("file:x", "looks like a URL"),
        ("s3:x", "looks like a URL"),
        ("s3://bucket/x", "looks like a URL"),
        ("a_file", "is a file, not a folder"),
        ("a_file/below", "is a file, not a folder"),
    ],
)
def test_bad_out_is_one_line_exit_2_before_anything(out, words, write_experiment, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("not a folder")
    experiment = write_experiment(TINY)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["run", str(experiment), "--out", out]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"lrd: error: --out {out}: ") and words in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert (tmp_path / "a_file").read_text() == "not a folder"


WITHOUT_DAC_OVERRIDE = """\
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
    if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP: root keeps them no more after exec
        raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")
os.execv(sys.executable, [sys.executable, "-m", "lrd.cli", *sys.argv[1:]])
"""


def lrd_read_only(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`lrd` in a process that cannot write where file modes say so (even as root: it drops that privilege)."""
    command = ["-c", WITHOUT_DAC_OVERRIDE] if os.geteuid() == 0 else ["-m", "lrd.cli"]
    return subprocess.run([sys.executable, *command, *args], cwd=cwd, capture_output=True, text=True, env=env())


def set_writable(folder: Path, writable: bool) -> None:
    for path in [folder, *folder.rglob("*")]:
        mode = path.stat().st_mode
        path.chmod(mode | 0o222 if writable else mode & ~0o222)


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.rglob("*") if p.is_file()
    }


def test_read_only_unfinished_folder_is_one_line_exit_2(tmp_path, cache_dir):
    (tmp_path / "exp.toml").write_text(TINY)
    (tmp_path / "out").mkdir()
    set_writable(tmp_path / "out", False)
    try:
        proc = lrd_read_only("run", "exp.toml", "--out", "out", cwd=tmp_path)
    finally:
        set_writable(tmp_path / "out", True)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines() == ["lrd: error: --out out: cannot write there (Permission denied)"]
    assert proc.stdout == "" and not list((tmp_path / "out").iterdir())


def test_read_only_finished_folder_is_shown_plotted_and_checked_without_writing(reference, tmp_path, cache_dir):
    shutil.copytree(reference.parent, tmp_path, dirs_exist_ok=True)
    out = tmp_path / "out"
    set_writable(out, False)
    before = snapshot(out)
    try:
        show = lrd_read_only("show", "out", cwd=tmp_path)
        plot = lrd_read_only("plot", "out", cwd=tmp_path)
        run = lrd_read_only("run", "exp.toml", "--out", "out", cwd=tmp_path)
    finally:
        set_writable(out, True)
    assert show.returncode == 0 and "lstm" in show.stdout, show.stderr
    assert plot.returncode == 0 and "figure files" in plot.stdout, plot.stderr
    assert run.returncode == 0, run.stderr
    assert "0 runs computed, 4 already done" in run.stdout
    assert "Traceback" not in show.stderr + plot.stderr + run.stderr
    assert snapshot(out) == before


def test_read_only_finished_folder_without_a_lock_file_is_checked_unlocked(reference, tmp_path, cache_dir):
    out = copy_of(reference, tmp_path)
    (out / store.LOCK).unlink()  # none can be made: the process cannot change the folder, so needs no lock
    set_writable(out, False)
    before = snapshot(out)
    try:
        run = lrd_read_only("run", "exp.toml", "--out", "out", "--no-plot", cwd=tmp_path)
    finally:
        set_writable(out, True)
    assert run.returncode == 0 and "0 runs computed, 4 already done" in run.stdout, run.stderr
    assert "Traceback" not in run.stderr
    assert snapshot(out) == before


# --- failed runs -------------------------------------------------------------------------------
ALWAYS_FAILS = """\
from lrd.tasks import register
from lrd.tasks.delayed_recall import DelayedRecall


@register
class Hopeless(DelayedRecall):
    name = "hopeless"

    def sample(self, key, batch_size):
        raise ValueError("never any samples")
"""


def test_all_runs_failed_exit_1_with_the_hint_and_show_lists_them(tmp_path, cache_dir):
    (tmp_path / "hopeless.py").write_text(ALWAYS_FAILS)
    (tmp_path / "exp.toml").write_text(
        'imports = ["hopeless.py"]\n'
        + TINY.replace('"delayed_recall"', '"hopeless"').replace('["rnn", "lstm"]', '"rnn"')
    )
    run = lrd("run", "exp.toml", "--out", "out", cwd=tmp_path)  # figures on
    assert run.returncode == 1, run.stdout + run.stderr
    assert "0 runs computed, 0 already done, 0 diverged, 2 failed" in run.stdout
    assert "no figures: all 2 runs failed" in run.stdout
    assert run.stderr.strip().splitlines() == [
        "lrd: 2 runs failed (see the error column of the runs table); run the same command to retry"
    ]
    show = lrd("show", "out", cwd=tmp_path)
    assert show.returncode == 0, show.stderr
    assert "failed: hopeless gaps 4 rnn seeds 0,1: ValueError: never any samples" in show.stdout
    assert "Traceback" not in show.stderr
    plot = lrd("plot", "out", cwd=tmp_path)
    assert plot.returncode == 0 and "no figures: all 2 runs failed" in plot.stdout, plot.stderr


# --- large grids, versions, memory ------------------------------------------------------------------
def test_a_large_grid_prints_its_size_and_a_time_estimate(write_experiment, tmp_path, monkeypatch, capsys, cache_dir):
    monkeypatch.setattr(cli, "LARGE_GRID", 3)  # TINY's 4 runs count as large
    assert main(["run", str(write_experiment(TINY)), "--out", str(tmp_path / "out"), "--no-plot"]) == 0
    captured = capsys.readouterr()
    assert "tiny: a large grid of 4 runs; a time estimate follows the first group" in captured.out
    estimates = [line for line in captured.err.splitlines() if line.startswith("estimate: about ")]
    assert len(estimates) == 1 and "for the 4 runs to compute" in estimates[0], captured.err


def test_versions_are_looked_up_once_per_sweep(write_experiment, tmp_path, monkeypatch, cache_dir):
    calls = []

    def counting():
        calls.append(1)
        return store.versions()

    backends.pinned_versions.cache_clear()
    monkeypatch.setattr(backends, "versions", counting)
    try:
        assert main(["run", str(write_experiment(TINY)), "--out", str(tmp_path / "out"), "--no-plot"]) == 0
    finally:
        backends.pinned_versions.cache_clear()
    assert len(calls) == 1  # two groups, one lookup


def test_a_group_that_cannot_fit_in_memory_is_refused_before_anything(write_experiment, tmp_path, capsys):
    path = write_experiment(TINY.replace("gap = 4", "gap = 100000000"))
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0] and "GiB (estimate), this machine has" in err[0], err
    assert not out.exists()


@pytest.mark.parametrize(
    "cell, gap, hidden, measured_kib",
    # peak RSS of `lrd run` (2 seeds, batch 16, probe 16, steps 2, CPU) measured when the estimate was fitted
    [("lstm", 1000, 64, 668556), ("lstm", 8000, 64, 1600856), ("rnn", 8000, 64, 1058816), ("lstm", 8000, 128, 2617860)],
)
def test_the_memory_estimate_is_near_the_measured_peaks(cell, gap, hidden, measured_kib, write_experiment):
    text = TINY.replace("gap = 4", f"gap = {gap}").replace('["rnn", "lstm"]', f'"{cell}"')
    text = text.replace("hidden = 8", f"hidden = {hidden}").replace(
        "steps = 20\nlog_every = 10", "steps = 2\nlog_every = 1"
    )
    [group] = plan(load_experiment(write_experiment(text)), done=set())
    assert group_memory(group) == pytest.approx(measured_kib * 1024, rel=0.05)


# --- damaged runs ------------------------------------------------------------------------------
def copy_of(reference: Path, tmp_path: Path, unpacked: bool = False) -> Path:
    """The undisturbed results (and exp.toml) in tmp_path, packed (as the sweep left them) or ``unpacked``.

    ``unpacked``: one run folder per run, as a sweep leaves them before it packs (conftest.unpack).
    """
    shutil.copytree(reference.parent, tmp_path, dirs_exist_ok=True)
    assert (tmp_path / "out" / store.PACKED).is_dir() and not (tmp_path / "out" / store.RUNS).exists()
    if unpacked:
        unpack(tmp_path / "out")
    return tmp_path / "out"


def run_ids(out: Path) -> list[str]:
    """The stored run ids, ordered as the runs table (rnn seed 0, 1, lstm seed 0, 1 sort as task, gap, model)."""
    return store.load(out).runs["run"].tolist()


def cut_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def damage(run_dir: Path, how: str) -> None:
    """Damage one run folder as a careless user or a hostile filesystem would."""
    if how.startswith("legacy "):  # as written before manifests
        (run_dir / store.MANIFEST).unlink()
        how = how.removeprefix("legacy ")
    if how == "curves cut to half":
        cut_half(run_dir / "curves.parquet")
    elif how == "grad_norms byte flipped":
        flip_a_byte(run_dir / "grad_norms.parquet")
    elif how == "manifest garbage":
        (run_dir / store.MANIFEST).write_text("{not json")
    elif how == "an empty folder":
        shutil.rmtree(run_dir)
        run_dir.mkdir()
    else:  # "<table> deleted"
        (run_dir / f"{how.split()[0]}.parquet").unlink()


DAMAGES = {  # how -> the reason named
    "curves cut to half": r"curves\.parquet unreadable \(\d+ bytes, \d+ written\)",
    "run deleted": r"run\.parquet missing",
    "grad_norms deleted": r"grad_norms\.parquet missing",
    "curves deleted": r"curves\.parquet missing",
    "grad_norms byte flipped": r"grad_norms\.parquet unreadable \(its SHA-256 is not the one written\)",
    "manifest garbage": r"manifest\.json unreadable",
    "an empty folder": r"run\.parquet missing",
    "legacy curves cut to half": r"curves\.parquet unreadable \(.+\)",
    "legacy run deleted": r"run\.parquet missing",
    "legacy grad_norms deleted": r"grad_norms\.parquet missing",
    "legacy curves deleted": r"curves\.parquet missing",  # looked like a failed run before
}


@pytest.mark.parametrize("how", list(DAMAGES))
def test_show_and_plot_leave_a_damaged_run_out_and_name_it(how, reference, tmp_path, capsys):
    out = copy_of(reference, tmp_path, unpacked=True)
    ids = run_ids(out)
    damage(out / "runs" / ids[1], how)
    want = [i for i in ids if i != ids[1]]
    line = rf"lrd: 1 damaged run left out: {ids[1]}, {DAMAGES[how]} \(`lrd run` of the experiment computes them again\)"
    plot = [["plot", str(out)]] if how == "curves cut to half" else []  # the same loading as show; drawing is slow
    for command in [["show", str(out)], *plot]:
        assert main(command) == 0
        captured = capsys.readouterr()
        assert re.fullmatch(line, captured.err.strip()), captured.err
        assert "Traceback" not in captured.err
    assert store.check_run(out / "runs" / ids[1]).state == store.DAMAGED
    named = {}
    got = store.load(out, on_damaged=named.__setitem__)
    assert list(named) == [ids[1]]
    want_runs = store.load(reference).runs
    pd.testing.assert_frame_equal(
        got.runs.drop(columns="wall_time_s"),
        want_runs[want_runs["run"].isin(want)].drop(columns="wall_time_s").reset_index(drop=True),
        check_exact=True,
    )
    with pytest.warns(store.StoreWarning, match=f"damaged run {ids[1]} left out"):
        store.load(out)


def test_a_folder_whose_runs_are_all_damaged_names_each_of_them(reference, tmp_path, capsys):
    out = copy_of(reference, tmp_path)
    ids = unpack(out)  # as a sweep leaves it before packing: one folder per run
    for run_id in ids:
        damage(out / "runs" / run_id, "curves cut to half")
    for command in (["show", str(out)], ["plot", str(out)]):
        assert main(command) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert all(f"{run_id}, curves.parquet unreadable" in err for run_id in ids), err


@pytest.mark.parametrize("command", [["tasks"], ["show", "FOLDER"], ["run", "exp.toml", "--out", "out", "--no-plot"]])
def test_output_to_a_full_disk_is_one_line_with_exit_2(command, reference, tmp_path):
    """stdout on /dev/full (ENOSPC): one line on stderr naming it, exit 2, no traceback; the runs stay."""
    out = copy_of(reference, tmp_path)
    argv = [str(out) if word == "FOLDER" else word for word in command]
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "lrd", *argv],
            cwd=tmp_path,
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            env=env(),
        )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == ["lrd: error: cannot write the output (No space left on device)"]
    assert_same_tables(out, reference)


def test_lrd_run_recomputes_damaged_runs_and_says_so_in_one_line(reference, tmp_path, cache_dir):
    out = copy_of(reference, tmp_path, unpacked=True)
    ids = run_ids(out)
    healthy = (out / "runs" / ids[3] / "curves.parquet").read_bytes()
    damage(out / "runs" / ids[0], "curves cut to half")
    damage(out / "runs" / ids[1], "legacy grad_norms deleted")
    damage(out / "runs" / ids[2], "run deleted")
    damage(out / "runs" / ids[3], "legacy curves cut to half")  # the only run of its group: retrained alone
    (out / "runs" / ids[3] / "curves.parquet").write_bytes(healthy)  # healthy again, as written before manifests
    run = lrd("run", "exp.toml", "--out", "out", "--no-plot", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    lines = [line for line in run.stdout.splitlines() if "damaged" in line]
    assert len(lines) == 1 and lines[0].startswith("3 damaged runs recomputed: "), run.stdout
    for run_id, reason in zip(
        ids[:3], ("curves.parquet unreadable (", "grad_norms.parquet missing", "run.parquet miss")
    ):
        assert f"{run_id}, {reason}" in lines[0]
    assert "3 runs computed, 1 already done" in run.stdout
    assert_same_tables(out, reference)
    assert all(check.state == store.COMPLETE for check in store.check_runs(out).values())
    assert sorted(store.stored_runs(out)) == sorted(ids) and not (out / "runs").exists()  # every run done: packed


PACKED_DAMAGES = {  # how -> the reason named
    "curves cut to half": r"tables/curves\.parquet unreadable \(\d+ bytes, \d+ written\)",
    "grad_norms byte flipped": r"tables/grad_norms\.parquet unreadable \(its SHA-256 is not the one written\)",
    "runs deleted": r"tables/runs\.parquet missing",
    "manifest garbage": r"tables/manifest\.json unreadable",
}


@pytest.mark.parametrize("how", list(PACKED_DAMAGES))
def test_a_damaged_packed_table_is_named_in_one_line_and_lrd_run_recomputes_its_runs(how, reference, tmp_path):
    out = copy_of(reference, tmp_path)
    tables = out / store.PACKED
    if how == "curves cut to half":
        cut_half(tables / "curves.parquet")
    elif how == "grad_norms byte flipped":
        flip_a_byte(tables / "grad_norms.parquet")
    elif how == "runs deleted":
        (tables / "runs.parquet").unlink()
    else:
        (tables / store.MANIFEST).write_text("{not json")
    show = lrd("show", "out", cwd=tmp_path)
    assert show.returncode == 2 and "Traceback" not in show.stderr, show.stderr
    [line] = show.stderr.strip().splitlines()
    why = rf"\({PACKED_DAMAGES[how]}; `lrd run` computes them again\)"
    assert re.fullmatch(rf"lrd: error: out: no readable runs here, 4 damaged {why}", line), line
    run = lrd("run", "exp.toml", "--out", "out", "--no-plot", cwd=tmp_path)
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    assert "4 runs computed, 0 already done" in run.stdout
    [said] = [line for line in run.stdout.splitlines() if "damaged" in line]
    assert re.fullmatch(rf"4 damaged runs recomputed: 4 runs, {PACKED_DAMAGES[how]}", said), said
    assert_same_tables(out, reference)  # packed again, whole
    assert not (out / "runs").exists() and not (out / store.PACKED_OLD).exists()


def test_a_damaged_packed_table_beside_run_folders_leaves_only_its_runs_out(reference, tmp_path, capsys):
    out = copy_of(reference, tmp_path, unpacked=True)
    ids = run_ids(out)
    for run_id in ids[:2]:  # two runs packed, two in run folders
        shutil.move(out / "runs" / run_id, tmp_path / run_id)
    store.pack(out)
    for run_id in ids[:2]:
        shutil.move(tmp_path / run_id, out / "runs" / run_id)
    cut_half(out / store.PACKED / "curves.parquet")  # the packed runs are ids 2 and 3
    assert main(["show", str(out)]) == 0
    err = capsys.readouterr().err.strip()
    assert re.fullmatch(
        r"lrd: 2 damaged runs left out: 2 runs, tables/curves\.parquet unreadable \(\d+ bytes, \d+ written\) "
        r"\(`lrd run` of the experiment computes them again\)",
        err,
    ), err
    assert store.load(out, on_damaged=lambda *_: None).runs["run"].tolist() == ids[:2]
    assert main(["pack", str(out)]) == 2  # it would lose the damaged table's runs, which no run folder holds
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"lrd: error: {out / 'tables'}: curves.parquet unreadable (") and "\n" not in err
    assert "2 of its runs are in no run folder, so packing now would lose them" in err


@pytest.mark.parametrize(
    "text, words",
    [
        ("{not json", "cannot read the resolved experiment"),
        ('{"runs": 5}', "not a resolved experiment (no 'runs' table)"),
        ('{"schema": "two", "runs": {}}', "'schema' must be a whole number"),
        ('{"schema": 2, "report": [], "runs": {}}', "'report' a table"),
    ],
)
def test_a_garbage_experiment_json_is_one_line_exit_2(text, words, reference, tmp_path, capsys):
    out = copy_of(reference, tmp_path)
    (out / "experiment.json").write_text(text)
    experiment = str(tmp_path / "exp.toml")
    for command in (["show", str(out)], ["plot", str(out)], ["run", experiment, "--out", str(out), "--no-plot"]):
        assert main(command) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"lrd: error: {out / 'experiment.json'}: ") and words in err[0], err
    assert (out / "experiment.json").read_text() == text  # nothing rewritten


def test_committed_results_are_packed_and_check():
    """Each committed study is its packed tables (every run checks against the manifest), experiment files and PNGs."""
    folders = sorted(p for p in (Path(WORKTREE) / "results").iterdir() if p.is_dir())
    assert len(folders) >= 9
    for folder in folders:
        assert not (folder / "runs").exists() and (folder / store.PACKED / store.MANIFEST).is_file(), folder
        found = store.check_runs(folder)
        assert set(found) == set(store.current_run_ids(folder) or []), folder
        assert all(check.state == store.COMPLETE for check in found.values()), (folder, found)
        figures = {p.suffix for p in (folder / "figures").iterdir()}
        assert figures == {".png"}, (folder, figures)  # PDFs on demand only (lrd plot --pdf)


def test_upgrade_packs_runs_written_before_manifests_and_leaves_a_damaged_one(reference, tmp_path, capsys):
    out = copy_of(reference, tmp_path, unpacked=True)
    ids = run_ids(out)
    for i in ids:
        (out / "runs" / i / store.MANIFEST).unlink()  # as the committed results were written
    damage(out / "runs" / ids[0], "curves cut to half")
    damaged = snapshot(out / "runs" / ids[0])
    assert main(["upgrade", str(out)]) == 0
    said = capsys.readouterr().out.strip().splitlines()
    assert said[0].startswith(f"{out}: 3 runs packed, 3 in all, into {out / 'tables'} (") and len(said) == 2
    assert said[1].startswith(f"{out}: 1 failed or damaged run left as run folders: {ids[0]}, curves.parquet unread")
    assert sorted(p.name for p in (out / "runs").iterdir()) == [ids[0]]  # damaged: left for lrd run, untouched
    assert snapshot(out / "runs" / ids[0]) == damaged
    want = store.load(reference).runs
    got = store.load(out, on_damaged=lambda *_: None).runs
    pd.testing.assert_frame_equal(got, want[want["run"] != ids[0]].reset_index(drop=True), check_exact=True)
    assert main(["upgrade", str(out)]) == 0
    assert "already results schema 2 and packed; nothing to do" in capsys.readouterr().out


# --- the lock ----------------------------------------------------------------------------------
HOLD_LOCK = """\
import sys, time
from pathlib import Path
from lrd import store
with store.lock(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(600)
"""


def hold_lock(out: Path) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], stdout=subprocess.PIPE, text=True, env=env())
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_second_lrd_run_exits_2_naming_the_holder_and_show_needs_no_lock(reference, tmp_path, cache_dir):
    out = copy_of(reference, tmp_path, unpacked=True)
    shutil.rmtree(out / "runs" / run_ids(out)[0])  # something to compute
    before = snapshot(out)
    holder = hold_lock(out)
    try:
        second = lrd("run", "exp.toml", "--out", "out", "--no-plot", cwd=tmp_path)
        unchanged = {k: v for k, v in snapshot(out).items() if k != ".lock"}
        show = lrd("show", "out", cwd=tmp_path)
        assert second.returncode == 2, second.stdout + second.stderr
        assert second.stderr.strip().splitlines() == [
            f"lrd: error: out: another lrd (pid {holder.pid}) is writing this results folder; "
            "run again when it has finished (or stop it)"
        ]
        assert second.stdout == ""
        assert unchanged == {k: v for k, v in before.items() if k != ".lock"}
        assert show.returncode == 0 and "lstm" in show.stdout, show.stderr
    finally:
        holder.kill()  # the OS releases the lock of a killed process
        holder.wait()
        holder.stdout.close()
    again = lrd("run", "exp.toml", "--out", "out", "--no-plot", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "1 runs computed, 3 already done" in again.stdout
    assert_same_tables(out, reference)


def test_two_lrd_run_at_once_the_second_stops_and_the_first_finishes(reference, tmp_path, cache_dir):
    """Issue 16's case: the second's clean-up deleted the first's temporary folder, which then crashed."""
    (tmp_path / "exp.toml").write_text(TINY)
    first = start("run", "exp.toml", "--out", "out", "--no-plot", cwd=tmp_path)
    wait_for_line(first, "training")
    second = lrd("run", "exp.toml", "--out", "out", "--no-plot", cwd=tmp_path)
    stdout, stderr = first.communicate(timeout=180)
    assert second.returncode == 2 and f"(pid {first.pid})" in second.stderr, second.stdout + second.stderr
    assert len(second.stderr.strip().splitlines()) == 1
    assert first.returncode == 0 and "Traceback" not in stderr, stderr
    assert "4 runs computed" in stdout
    assert_same_tables(tmp_path / "out", reference)


def test_clean_up_keeps_a_live_process_s_temporary_folders(write_experiment, tmp_path):
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        runs = tmp_path / "out" / "runs"
        names = {
            "live": f".tmp-aaaa-pid{live.pid}-0123abcd",
            "dead": f".tmp-bbbb-pid{dead.pid}-0123abcd",
            "older lrd": ".tmp-cccc-0123abcd",
        }
        for name in names.values():
            (runs / name).mkdir(parents=True)
        (tmp_path / "out" / f".tmp-experiment.json-pid{dead.pid}-0123abcd").write_text("{}")
        store.prepare(tmp_path / "out", load_experiment(write_experiment(TINY)))
        assert sorted(p.name for p in runs.iterdir()) == [names["live"]]
        assert not list((tmp_path / "out").glob(".tmp-*"))
    finally:
        live.kill()
        live.wait()


def test_without_file_locks_the_sweep_goes_on_with_one_warning(tmp_path, monkeypatch, capsys):
    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(store.fcntl, "flock", no_locks)
    with store.lock(tmp_path):
        pass
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"lrd: warning: {tmp_path}: no file locks here"), err


def test_the_time_estimate_divides_by_the_groups_training_at_once(monkeypatch, capsys):
    """Two groups in training when the first ends (two workers): half the estimate of one at a time."""
    from lrd import progress

    class Quiet:
        def __getattr__(self, name):
            return lambda *args: None

    def estimate(started: list[str]) -> str:
        clock = iter([0.0, 10.0])
        monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
        reporter = progress.TimeEstimate(Quiet(), total=10, large=3)
        reporter.start(None, 10, 0)
        for label in started:
            reporter.group_started(label, 2, 4, 8, 1)
        reporter.group_done(started[0], [{}, {}])  # 2 runs in 10 s: 5 s per run
        return capsys.readouterr().err.strip()

    assert estimate(["a"]) == (
        "estimate: about 50 s for the 10 runs to compute (5.0 s per run in the first group, "
        "compilation included; 1 group training at once)"
    )
    assert estimate(["a", "b"]).startswith("estimate: about 25 s for the 10 runs")
    assert "2 groups training at once" in estimate(["a", "b"])
