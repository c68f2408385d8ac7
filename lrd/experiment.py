"""Experiment files: a declarative TOML sweep, validated strictly, expanded into runs.

An experiment file names a task and its parameters, the models, the training
settings and the seeds. Any field may be a list; the sweep is the grid over
all lists (task x model x training x seed)::

    name = "quick"                    # optional; default: the file's stem
    description = "..."               # optional
    seeds = [0, 1, 2]                 # default [0]
    imports = ["my_task.py"]          # optional: files or modules that register tasks

    [task]
    name = "delayed_recall"
    gap = [10, 50]

    [model]
    cell = ["rnn", "lstm", "gru"]
    hidden = 32

    [train]
    steps = 600

    [report]                          # optional: how results are reported, not part of any run
    solve_threshold = 0.9             # default 0.95

Every problem is reported as one ``ExperimentError`` line naming the file,
the key and what is allowed, before anything is written.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import itertools
import json
import sys
import tomllib
from pathlib import Path
from typing import Any, NamedTuple

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from lrd.models.network import ModelConfig
from lrd.names import did_you_mean, unknown_name_message
from lrd.schema import SCHEMA_VERSION, SOLVE_THRESHOLD
from lrd.tasks import TASKS, Task
from lrd.train import TrainConfig

TOP_LEVEL_KEYS = ("name", "description", "seeds", "imports", "task", "model", "train", "report")
SECTIONS = ("task", "model", "train", "report")


class ExperimentError(ValueError):
    """A user error in an experiment file; its message is one line, ready to print."""


class ReportConfig(BaseModel):
    """How a results folder is reported: settings that change no run, so changing them retrains nothing."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    solve_threshold: float = Field(
        SOLVE_THRESHOLD, gt=0.0, le=1.0, description="a finished run is 'solved' when its final metric reaches this"
    )


class RunSpec(NamedTuple):
    """One training run: a fully resolved configuration and a seed."""

    task: Task
    model: ModelConfig
    train: TrainConfig
    seed: int

    def config(self) -> dict[str, Any]:
        """Everything that decides the run's numbers (and so its id), as plain data.

        Reporting settings (``ReportConfig``) are not part of it. A training option that
        reads one (an early stop once the run is solved) must add it here while it is on.
        """
        return {
            "task": {"name": self.task.name, **self.task.params()},
            "model": self.model.model_dump(),
            "train": self.train.model_dump(),
            "seed": self.seed,
        }

    @property
    def run_id(self) -> str:
        """Hash of the resolved configuration: the run's key in the results store."""
        return run_id_of(self.config())

    @property
    def group_key(self) -> tuple[Task, ModelConfig, TrainConfig]:
        """Runs with the same key share a compiled program and train together (vmap over seeds)."""
        return (self.task, self.model, self.train)


def run_id_of(config: dict[str, Any], schema: int = SCHEMA_VERSION) -> str:
    """The id of a run with this resolved configuration (``RunSpec.config()``) under results schema ``schema``."""
    payload = json.dumps({**config, "schema": schema}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


class Plugin(NamedTuple):
    """A module named in ``imports``: a task file (its text travels to remote workers) or an installed module."""

    module: str  # the name it is imported under, the same in every process
    path: str | None = None  # a task file: where the driver read it
    source: str | None = None  # a task file: its text


class Experiment(NamedTuple):
    name: str
    description: str
    path: Path
    source: str  # the file's text, saved beside the results
    runs: list[RunSpec]
    plugins: tuple[Plugin, ...] = ()  # what a worker process imports before it trains a run
    report: ReportConfig = ReportConfig()


def load_experiment(path: str | Path) -> Experiment:
    """Read, validate and expand an experiment file; raises ExperimentError."""
    path = Path(path)
    where = str(path)
    try:
        source = path.read_text()
    except OSError as err:
        raise ExperimentError(f"{where}: cannot read the experiment file ({err.strerror})") from None
    try:
        raw = tomllib.loads(source)
    except tomllib.TOMLDecodeError as err:
        raise ExperimentError(f"{where}: not valid TOML: {err}") from None

    _check_keys(where, "", raw, TOP_LEVEL_KEYS)
    name = _scalar(where, "name", raw.get("name", path.stem), str)
    description = _scalar(where, "description", raw.get("description", ""), str)
    plugins = _import_plugins(where, path.parent, raw.get("imports", []))
    seeds = _seeds(where, raw.get("seeds", [0]))

    for section in SECTIONS:
        if not isinstance(raw.get(section, {}), dict):
            raise ExperimentError(f"{where}: {section}: must be a table ([{section}])")
    tasks = _expand_task(where, raw.get("task"))
    models = _expand(where, "model", raw.get("model", {}), ModelConfig, required=("cell",))
    trains = _expand(where, "train", raw.get("train", {}), TrainConfig)
    report = _validate(where, "report", ReportConfig, raw.get("report", {}), "report")

    runs: dict[str, RunSpec] = {}
    for task, model, train, seed in itertools.product(tasks, models, trains, seeds):
        spec = RunSpec(task, model, train, seed)
        runs.setdefault(spec.run_id, spec)  # identical resolved configs are one run
    return Experiment(name, description, path, source, list(runs.values()), plugins, report)


# --- helpers -----------------------------------------------------------------------
def _check_keys(where: str, section: str, table: dict, allowed) -> None:
    for key in table:
        if key not in allowed:
            label = f"{section}.{key}" if section else key
            raise ExperimentError(
                f"{where}: {label}: unknown key; allowed: {', '.join(allowed)}{did_you_mean(key, allowed)}"
            )


def _scalar(where: str, key: str, value, kind: type):
    if not isinstance(value, kind):
        raise ExperimentError(f"{where}: {key}: must be a {kind.__name__} (got {value!r})")
    return value


def _seeds(where: str, value) -> list[int]:
    seeds = value if isinstance(value, list) else [value]
    if not seeds:
        raise ExperimentError(f"{where}: seeds: empty list; give at least one seed")
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
            # jax.random.PRNGKey keeps the low 32 bits: 2**32 would silently be seed 0 again
            raise ExperimentError(f"{where}: seeds: must be integers in [0, 2**32) (got {seed!r})")
    if len(set(seeds)) != len(seeds):
        raise ExperimentError(f"{where}: seeds: repeated seed in {seeds}")
    return seeds


def _import_plugins(where: str, base: Path, imports) -> tuple[Plugin, ...]:
    """Import task files (paths relative to the experiment file) or modules so they register."""
    if isinstance(imports, str):
        imports = [imports]
    if not isinstance(imports, list) or not all(isinstance(i, str) for i in imports):
        raise ExperimentError(f"{where}: imports: must be a list of file paths or module names")
    plugins = []
    for item in imports:
        try:
            if item.endswith(".py"):
                file = (base / item).resolve()
                if not file.is_file():
                    raise ExperimentError(f"{where}: imports: no such file {str(file)!r}")
                module = f"lrd_user_{file.stem}_{hashlib.sha256(str(file).encode()).hexdigest()[:8]}"
                plugin = Plugin(module, str(file), file.read_text())
            else:
                plugin = Plugin(item)
            load_plugin(plugin)
            plugins.append(plugin)
        except ExperimentError:
            raise
        except Exception as err:  # a user's file: report, do not trace back
            raise ExperimentError(f"{where}: imports: {item!r} failed: {type(err).__name__}: {err}") from None
    return tuple(plugins)


def load_plugin(plugin: Plugin) -> None:
    """Import a plugin in this process (once): a task file from its text, so it needs no file on this host."""
    if plugin.module in sys.modules:
        return
    if plugin.source is None:
        importlib.import_module(plugin.module)
        return
    spec = importlib.util.spec_from_loader(plugin.module, loader=None, origin=plugin.path)
    assert spec is not None  # a loader-less spec from a name always exists
    module = importlib.util.module_from_spec(spec)
    module.__file__ = plugin.path
    sys.modules[plugin.module] = module
    try:
        exec(compile(plugin.source, plugin.path or plugin.module, "exec"), module.__dict__)
    except BaseException:
        del sys.modules[plugin.module]
        raise


def _grid(where: str, section: str, table: dict) -> list[dict]:
    """All combinations of a table whose values may be lists."""
    keys, choices = [], []
    for key, value in table.items():
        values = value if isinstance(value, list) else [value]
        if not values:
            raise ExperimentError(f"{where}: {section}.{key}: empty list; the grid would have no runs")
        keys.append(key)
        choices.append(values)
    return [dict(zip(keys, combo)) for combo in itertools.product(*choices)]


def _expand_task(where: str, table) -> list[Task]:
    if table and "solve_threshold" in table:  # a task field before results schema 2
        raise ExperimentError(
            f"{where}: task.solve_threshold: moved to [report] solve_threshold (reporting only: it retrains nothing)"
        )
    if not table or "name" not in table:
        raise ExperimentError(f"{where}: task.name: missing; allowed: {', '.join(sorted(TASKS))}")
    tasks = []
    for combo in _grid(where, "task", table):
        name = combo.pop("name")
        if not isinstance(name, str) or name not in TASKS:
            message = unknown_name_message(name, TASKS) if isinstance(name, str) else f"must be a string (got {name!r})"
            raise ExperimentError(f"{where}: task.name: {message}")
        cls = TASKS[name]
        tasks.append(_validate(where, "task", cls, combo, f"task {name!r}"))
    return tasks


def _expand(where: str, section: str, table: dict, cls, required=()) -> list:
    for key in required:
        if key not in table:
            raise ExperimentError(f"{where}: {section}.{key}: missing")
    return [_validate(where, section, cls, combo, section) for combo in _grid(where, section, table)]


def _validate(where: str, section: str, cls, values: dict, what: str):
    fields = list(cls.model_fields)
    _check_keys(where, section, values, fields if section != "task" else ["name", *fields])
    try:
        return cls(**values)
    except pydantic.ValidationError as err:
        raise ExperimentError(f"{where}: {_describe(section, err, cls)}") from None


def _describe(section: str, err: pydantic.ValidationError, cls) -> str:
    """The first validation error as 'section.key: message (got value)'."""
    first = err.errors()[0]
    key = ".".join(str(part) for part in first["loc"])
    label = f"{section}.{key}" if key else section
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] in ("literal_error", "enum", "value_error") or not key:
        return f"{label}: {message}"
    got = first.get("input")
    return f"{label}: {message} (got {got!r})"
