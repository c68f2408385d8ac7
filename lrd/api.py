"""The Python API: run an experiment from a notebook or a script and get its tables back.

    import lrd

    results = lrd.run("experiments/quick.toml", **{"task.gap": [10, 40], "seeds": [0, 1]})
    results.runs  # one row per run (pandas), as lrd.load("results/quick").runs

``run`` is ``lrd run`` without the command line: the same experiment files,
validation, overrides, resuming and results folder, with errors raised as
exceptions (``ExperimentError``, ``StoreError``) instead of printed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lrd.experiment import ExperimentError, experiment_from
from lrd.schema import STATUS_FAILED, Results
from lrd.store import load


def run(
    experiment: str | Path | Mapping[str, Any],
    out: str | Path | None = None,
    *,
    figures: bool = False,
    progress: bool = True,
    **overrides: Any,
) -> Results:
    """Run (or resume) an experiment into a results folder and return its tables, as ``lrd.load(out)`` does.

    Args:
        experiment: an experiment file's path, its text (a TOML string: any string
            with a newline or an ``=``), or the same as a dict (``{"name": ..., "task":
            {...}, ...}``). Text and dicts must set ``name``.
        out: the results folder; default ``results/<name>`` under the current folder.
            Runs already stored there are not computed again.
        figures: also draw every figure into ``out/figures`` (as ``lrd plot``) and write
            ``out/report.html`` (as ``lrd report``), as ``lrd run`` does.
        progress: print a line per group of runs as it trains.
        **overrides: values that replace the experiment's, validated exactly as a
            file's: dotted keys through a dict (``**{"model.cell": ["lstm", "gru"],
            "train.lr": 3e-3}``), a section as a dict (``model={"cell": "gru"}``,
            merged key by key into the file's ``[model]``), or a top-level key
            (``seeds=[0, 1]``). A list is a grid axis, as in a file. Values are
            Python values, not TOML text.

    Returns:
        ``Results(runs, curves, grad_norms, eval_gaps, dynamics)``: pandas DataFrames (see the
        README's "Results tables"; eval_gaps and dynamics empty where not asked for),
        for the runs of this experiment in ``out``.

    Raises:
        ExperimentError: a bad experiment or override (one line naming the key and
            what is allowed), or a group too large for this machine's memory;
            nothing is written.
        StoreError: ``out`` is a results folder of an older lrd (``lrd upgrade``).
    """
    from lrd import store
    from lrd.progress import PlainReporter
    from lrd.runtime import enable_compilation_cache
    from lrd.sweep import TooLarge, run_sweep

    spec = experiment_from(experiment, overrides)
    label = spec.path if spec.path.is_file() else f"experiment {spec.name!r}"  # text and dicts have no file
    for run_spec in spec.runs:
        try:
            run_spec.model.time_loop_path()
        except ValueError as err:  # a forced time-loop kernel that cannot run on this machine
            raise ExperimentError(f"{label}: model.{err}") from None
    out_dir = Path(out) if out is not None else Path("results") / spec.name
    store.check_schema(out_dir)
    enable_compilation_cache()
    reporter = PlainReporter() if progress else _Quiet()
    try:
        with reporter:
            run_sweep(spec, out_dir, reporter)
    except TooLarge as err:
        raise ExperimentError(f"{label}: {err}") from None
    results = load(out_dir)
    failed = int((results.runs["status"] == STATUS_FAILED).sum())
    if failed:
        print(f"{failed} runs failed (see results.runs['error']); run again to retry them")
    if figures and failed < len(results.runs):
        from lrd.cli import stored_overrides
        from lrd.plots import write_figures
        from lrd.report import write_report

        paths = write_figures(results, out_dir / "figures", overridden=stored_overrides(out_dir))
        report = write_report(out_dir, results)
        if progress:
            print(f"{len(paths)} figure files in {out_dir / 'figures'}; report: {report}")
    return results


class _Quiet:
    """A reporter that says nothing (``run(..., progress=False)``)."""

    def __enter__(self) -> _Quiet:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def start(self, *args: Any, **kwargs: Any) -> None:
        pass

    def group_started(self, *args: Any) -> None:
        pass

    def block_done(self, *args: Any) -> None:
        pass

    def group_done(self, *args: Any) -> None:
        pass


__all__ = ["ExperimentError", "Results", "load", "run"]
