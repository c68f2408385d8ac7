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
    hidden = 32                       # or: params = 5000 (each cell the hidden size nearest 5000 parameters)

    [train]
    steps = 600
    lr = [1e-3, 3e-3, 1e-2]           # learning rates train in one program with the seeds

    [report]                          # optional: how results are reported, not part of any run
    solve_threshold = 0.9             # default 0.95; also where stop_when_solved = true stops a run

Every problem is reported as one ``ExperimentError`` line naming the file,
the key and what is allowed, before anything is written.

Overrides change single values of an experiment without editing its file
(``lrd run EXP model.cell=[lstm,gru] train.lr=3e-3``, or ``lrd.run(EXP, **{"train.lr": 3e-3})``):
a dotted key (``section.key``, or a top-level key such as ``seeds``) and a value
that replaces the file's. A list is a grid axis, as in the file, and every value
is validated exactly as the file's would be. ``parse_overrides`` reads them from
the command line (TOML values; a bare word is a string), ``load_experiment`` and
``experiment_from`` apply them; the experiment then records the resolved file
(``Experiment.source``, saved as ``DIR/experiment.toml``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import itertools
import json
import math
import re
import sys
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from lrd.models.cells import CELLS
from lrd.models.network import MAX_HIDDEN, ModelConfig, hidden_for_params, param_count
from lrd.names import did_you_mean, unknown_name_message
from lrd.schema import SCHEMA_VERSION, SOLVE_THRESHOLD
from lrd.tasks import TASKS, Task
from lrd.train import TrainConfig

# how a task or cell of one's own is loaded, said when an unknown name is close to no built-in one
IMPORTS_HINT = 'imports = ["my_{kind}.py"] at the top of the experiment file'
TOP_LEVEL_KEYS = ("name", "description", "seeds", "imports", "task", "model", "train", "report")
SECTIONS = ("task", "model", "train", "report")


class ExperimentError(ValueError):
    """A user error in an experiment file; its message is one line, ready to print."""


class ReportConfig(BaseModel):
    """How a results folder is reported: settings that change no run, so changing them retrains nothing.

    Except one: a run with ``stop_when_solved`` stops at ``solve_threshold``, so for such
    runs the threshold is a training setting too (and part of their identity).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    solve_threshold: float = Field(
        SOLVE_THRESHOLD, gt=0.0, le=1.0, description="a finished run is 'solved' when its final metric reaches this"
    )


# Settings added after results were first stored, with the value that reproduces the earlier runs: at that
# value they stay out of a run's identity, so the stored runs keep their ids (and are found done).
LATER_TRAIN_SETTINGS = {
    "valid_size": 1024,
    "stop_when_solved": False,
    "eval_gaps": (),
    "recurrence_lr_factor": 1.0,
    "stop_margin": 0.0,
    "profile_every": 0,
    # the remedies (lrd.remedies): off by default
    "omega": 0.0,
    "floss": 0.0,
    "floss_k": 1,
    "floss_every": 1,
    # the diagnostics (lrd.dynamics): off by default, as every run stored before them was
    "diagnostics": False,
    "lyapunov_k": 4,
    "power_iterations": 2,
    "spectrum_size": 8,
    "saturation": 0.1,
    "spike_factor": 2.0,
}
# Settings whose value is itself a list: a list of lists makes a grid axis over them.
LIST_SETTINGS = {"train": ("eval_gaps",)}


class RunSpec(NamedTuple):
    """One training run: a fully resolved configuration and a seed.

    ``params_target``: the ``[model] params`` the hidden size was chosen for, if any.
    ``stop_threshold``: with ``stop_when_solved``, the metric at which the run stops
    (the experiment's ``[report] solve_threshold``); None otherwise.
    """

    task: Task
    model: ModelConfig
    train: TrainConfig
    seed: int
    params_target: int | None = None
    stop_threshold: float | None = None

    def config(self) -> dict[str, Any]:
        """The run's identity: everything that decides its numbers (and so its id), as plain data.

        Reporting settings (``ReportConfig``) are not part of it, with one exception: with
        ``stop_when_solved`` the solve threshold decides when training stops, so it is
        recorded (under ``train.stop_threshold``), with the rule that decides the stop where it is
        the validation stop check set (``train.stop_check = "valid"``, the default): the runs
        stopped by the rule of before (``"probe"``, ``lrd.train.STOP_CHECK_BEFORE``) keep the ids
        of their configuration without it (``TrainConfig``'s dump). The training settings added later
        (``LATER_TRAIN_SETTINGS``) enter it only away from the value that reproduces the
        earlier runs, as the cell options a cell lacks stay out of ``model`` (``ModelConfig``),
        so the stored runs keep their ids.
        """
        train = self.train.model_dump()
        for key, value in LATER_TRAIN_SETTINGS.items():
            if train[key] == value:
                del train[key]
        if self.train.stop_when_solved:
            train["stop_threshold"] = self.stop_threshold
        model = self.model.model_dump()
        if self.params_target is not None:
            model["params_target"] = self.params_target
        return {
            "task": {"name": self.task.name, **self.task.params()},
            "model": model,
            "train": train,
            "seed": self.seed,
        }

    @property
    def run_id(self) -> str:
        """Hash of the resolved configuration: the run's key in the results store."""
        return run_id_of(self.config())

    @property
    def group_key(self) -> tuple[Task, ModelConfig, TrainConfig, float | None]:
        """Runs with the same key share a compiled program and train together (vmap over seeds and learning rates).

        The key is the arguments of ``lrd.train.get_trainer``.
        """
        return (self.task, self.model, self.train.program(), self.stop_threshold)


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


def load_experiment(path: str | Path, overrides: Mapping[str, Any] | None = None) -> Experiment:
    """Read, validate and expand an experiment file, with ``overrides`` applied; raises ExperimentError.

    ``overrides`` maps dotted keys to values (see ``apply_overrides``); with overrides
    the experiment's ``source`` is the resolved file, not the file's own text.
    """
    path = Path(path)
    where = str(path)
    try:
        source = path.read_text()
    except OSError as err:
        raise ExperimentError(f"{where}: cannot read the experiment file ({err.strerror})") from None
    raw = _parse_toml(where, source)
    return _build(where, raw, source, path, overrides)


def experiment_from(
    experiment: str | Path | Mapping[str, Any], overrides: Mapping[str, Any] | None = None
) -> Experiment:
    """An experiment given as a file path, a TOML string or a dict (a parsed TOML file), with ``overrides``.

    A string with a newline or an ``=`` is TOML text, any other string a path. A
    string or dict has no file name to default to, so it must set ``name``; its
    ``imports`` are relative to the current folder. Raises ExperimentError.
    """
    if isinstance(experiment, Path) or (isinstance(experiment, str) and not re.search(r"[\n=]", experiment)):
        return load_experiment(experiment, overrides)
    if isinstance(experiment, str):
        where = "<experiment string>"
        raw, source = _parse_toml(where, experiment), experiment
    elif isinstance(experiment, Mapping):
        where = "<experiment dict>"
        raw, source = _plain(dict(experiment)), None
    else:
        raise ExperimentError(
            f"experiment: must be a file path, a TOML string or a dict (got {type(experiment).__name__})"
        )
    if "name" not in raw and not (overrides and "name" in overrides):
        raise ExperimentError(f"{where}: name: missing; an experiment given as text or a dict must name itself")
    return _build(where, raw, source, Path.cwd() / "<experiment>", overrides)


def _parse_toml(where: str, source: str) -> dict:
    try:
        return tomllib.loads(source)
    except tomllib.TOMLDecodeError as err:
        raise ExperimentError(f"{where}: not valid TOML: {err}") from None


def _plain(raw: dict) -> dict:
    """A copy of a dict experiment, its tables copied too, so overrides never change the caller's dict."""
    return {key: dict(value) if isinstance(value, Mapping) else value for key, value in raw.items()}


def _build(where: str, raw: dict, source: str | None, path: Path, overrides: Mapping[str, Any] | None) -> Experiment:
    """Validate and expand a parsed experiment (``path``: where relative imports and the default name come from)."""
    if overrides:
        raw, where = apply_overrides(where, raw, overrides)
    _check_keys(where, "", raw, TOP_LEVEL_KEYS)
    name = _scalar(where, "name", raw.get("name", path.stem), str)
    description = _scalar(where, "description", raw.get("description", ""), str)
    if overrides:  # the file's description no longer says what runs: say what changed
        description = overridden_description(description, overrides)
        raw = {**raw, "description": description}
    plugins = _import_plugins(where, path.parent, raw.get("imports", []))
    seeds = _seeds(where, raw.get("seeds", [0]))

    for section in SECTIONS:
        if not isinstance(raw.get(section, {}), dict):
            raise ExperimentError(f"{where}: {section}: must be a table ([{section}])")
    tasks = _expand_task(where, raw.get("task"))
    models = _expand_models(where, raw.get("model", {}), tasks)
    trains = _expand(where, "train", raw.get("train", {}), TrainConfig)
    _check_eval_gaps(where, tasks, models, trains)
    _check_diagnostics(where, models, trains)
    _check_remedies(where, models, trains)
    report = _validate(where, "report", ReportConfig, raw.get("report", {}), "report")

    runs: dict[str, RunSpec] = {}
    for task, train, seed in itertools.product(tasks, trains, seeds):
        stop = report.solve_threshold if train.stop_when_solved else None
        for model, target in models[task]:
            if not CELLS[model.cell].recurrence_params:  # nothing to train at another rate: one run, not duplicates
                spec = RunSpec(task, model, train.model_copy(update={"recurrence_lr_factor": 1.0}), seed, target, stop)
            else:
                spec = RunSpec(task, model, train, seed, target, stop)
            runs.setdefault(spec.run_id, spec)  # identical resolved configs are one run
    if source is None or overrides:  # record what was run: the resolved file
        source = f"# {where}\n" + to_toml({**raw, "name": name})
    return Experiment(name, description, path, source, list(runs.values()), plugins, report)


def _every_model(models: dict[Task, list[tuple[ModelConfig, int | None]]]) -> Iterator[ModelConfig]:
    """The model configurations of every task, in order (a model trained on two tasks comes twice)."""
    return (model for per_task in models.values() for model, _ in per_task)


def _check_remedies(
    where: str, models: dict[Task, list[tuple[ModelConfig, int | None]]], trains: list[TrainConfig]
) -> None:
    """The remedies (``omega``, ``floss``) act on the bare cell of layer 0, fed the model's inputs."""
    for name in ("omega", "floss"):
        if not any(getattr(train, name) > 0 for train in trains):
            continue
        for model in _every_model(models):
            if model.block != "bare":
                raise ExperimentError(
                    f"{where}: train.{name}: the remedies act on a bare cell, not one in a {model.block!r} block; "
                    "allowed with them: model.block = 'bare'"
                )


def _check_diagnostics(
    where: str, models: dict[Task, list[tuple[ModelConfig, int | None]]], trains: list[TrainConfig]
) -> None:
    """``train.diagnostics`` takes Jacobians of a recurrence: a cell without one (attention) is refused."""
    if not any(train.diagnostics for train in trains):
        return
    for model in _every_model(models):
        if not CELLS[model.cell].recurrent:
            raise ExperimentError(
                f"{where}: train.diagnostics: cell {model.cell!r} has no recurrence to take Jacobians of; "
                "set diagnostics = false for it (allowed with recurrent cells only)"
            )


def _check_eval_gaps(
    where: str, tasks: list[Task], models: dict[Task, list[tuple[ModelConfig, int | None]]], trains: list[TrainConfig]
) -> None:
    """``train.eval_gaps`` needs models whose parameters do not depend on the sequence length.

    Every recurrent cell qualifies (its parameters act per timestep). A cell or task class
    that sets ``length_dependent = True`` (say, attention with learned absolute positions, or a
    readout over the whole sequence) is refused, as is a task whose input or output width
    changes with the gap, or a gap the task does not allow.
    """
    if not any(train.eval_gaps for train in trains):
        return
    for model in _every_model(models):
        if getattr(CELLS[model.cell], "length_dependent", False):
            raise ExperimentError(
                f"{where}: train.eval_gaps: cell {model.cell!r} has parameters that depend on the sequence length; "
                "evaluation at other gaps needs a length-independent model (any recurrent cell)"
            )
    gaps = sorted({g for train in trains for g in train.eval_gaps})
    for task in tasks:
        if getattr(type(task), "length_dependent", False):
            raise ExperimentError(
                f"{where}: train.eval_gaps: task {task.name!r} has a model shape that depends on the sequence length"
            )
        for gap in gaps:
            try:
                other = task.at_gap(gap)
            except pydantic.ValidationError as err:
                reason = _describe("task", err, type(task))
                raise ExperimentError(
                    f"{where}: train.eval_gaps: gap {gap} not allowed for {task.name!r}: {reason}"
                ) from None
            if (other.input_dim, other.output_dim) != (task.input_dim, task.output_dim):
                raise ExperimentError(
                    f"{where}: train.eval_gaps: task {task.name!r} changes its input or output width with the gap "
                    f"(gap {task.gap} vs {gap}); a trained model cannot be evaluated at another gap"
                )


# --- overrides -----------------------------------------------------------------------
OVERRIDDEN = "overridden: "


def _override_value(value: Any) -> str:
    """A value as the command line writes it: ``[rnn,lstm]``, ``3e-3``, ``true``."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_override_value(v) for v in value) + "]"
    return str(value)


def overridden_description(description: str, overrides: Mapping[str, Any]) -> str:
    """``description`` with "overridden: KEY=VALUE ..." appended (an overridden description is kept as given).

    A section given as a dict (``model={"cell": "gru"}``, the Python API) reads as its dotted keys.
    """
    items = []
    for key, value in overrides.items():
        if key in SECTIONS and isinstance(value, Mapping):
            items += [f"{key}.{inner}={_override_value(v)}" for inner, v in value.items()]
        elif key != "description":
            items.append(f"{key}={_override_value(value)}")
    if not items:
        return description
    note = OVERRIDDEN + " ".join(items)
    return f"{description.rstrip()} ({note})" if description.strip() else note


def overridden_part(description: str) -> str:
    """The "overridden: ..." note of a stored description, or "" for an experiment run as its file says."""
    at = description.rfind(OVERRIDDEN)
    return description[at:].rstrip(")") if at >= 0 else ""


_KEYWORDS = ("true", "false", "inf", "nan")
# a quoted string (kept as it is), or a bare word that TOML would refuse: not part of a number like 3e-3
_BARE_WORD = re.compile(r"""("(?:[^"\\]|\\.)*"|'[^']*')|(?<![\w.+\-])([A-Za-z_][\w.\-/]*)""")


def parse_overrides(items: Sequence[str], where: str) -> dict[str, Any]:
    """``KEY=VALUE`` strings from the command line as {dotted key: value}; raises ExperimentError.

    VALUE is a TOML value (``3e-3``, ``[10, 200]``, ``"lstm"``, ``true``), except
    that a bare word, alone or in a list, is a string: ``lstm``, ``[lstm,gru]``.
    A missing ``=``, an empty key, a value that does not parse and a key given
    twice are errors; the keys themselves are checked by ``apply_overrides``.
    """
    overrides: dict[str, Any] = {}
    for item in items:
        key, equals, text = item.partition("=")
        key = key.strip()
        if not equals or not key:
            raise ExperimentError(f"{where}: override {item!r}: not KEY=VALUE (for example train.lr=3e-3)")
        if key in overrides:
            raise ExperimentError(f"{where}: override {key}: given twice; give each key once")
        overrides[key] = parse_value(text, f"{where}: override {key}")
    return overrides


def parse_value(text: str, where: str) -> Any:
    """A TOML value, where a bare word (``lstm``, or in a list ``[lstm, gru]``) is read as a string."""
    if "\n" not in text:
        for attempt in (text, _BARE_WORD.sub(_quote_bare_word, text)):
            try:
                return tomllib.loads(f"value = {attempt}")["value"]
            except tomllib.TOMLDecodeError:
                continue
    raise ExperimentError(
        f'{where}: {text!r} is not a TOML value (a number, true/false, a word or "string", or a [list] of them)'
    )


def _quote_bare_word(match: re.Match) -> str:
    quoted, word = match.groups()
    return quoted if quoted or word in _KEYWORDS else json.dumps(word)


def apply_overrides(where: str, raw: dict, overrides: Mapping[str, Any]) -> tuple[dict, str]:
    """``raw`` with each override's value in place of the file's, and the label errors now name.

    A key is ``section.key`` (``model.cell``) or a top-level key (``seeds``); in the
    Python API a section may also be given as a dict (``model={"cell": "gru"}``),
    merged key by key. An unknown section or top-level key is refused here, with a
    "did you mean"; the values, and the keys inside a section, are checked by the
    same validation as a file's.
    """
    flat: dict[str, Any] = {}
    for key, value in overrides.items():
        if key in SECTIONS and isinstance(value, Mapping):
            items = [(f"{key}.{inner}", inner_value) for inner, inner_value in value.items()]
        else:
            items = [(key, value)]
        for dotted, inner_value in items:
            if dotted in flat:
                raise ExperimentError(f"{where}: override {dotted}: given twice; give each key once")
            flat[dotted] = inner_value
    merged = _plain(raw)
    allowed = [key for key in TOP_LEVEL_KEYS if key not in SECTIONS] + [f"{s}.<key>" for s in SECTIONS]
    for dotted, value in flat.items():
        head, dot, rest = dotted.partition(".")
        if head in SECTIONS and rest and "." not in rest:
            section = merged.setdefault(head, {})
            if not isinstance(section, dict):
                raise ExperimentError(f"{where}: {head}: must be a table ([{head}])")
            section[rest] = value
        elif head in TOP_LEVEL_KEYS and head not in SECTIONS and not dot:
            merged[head] = value
        else:
            hint = did_you_mean(head, TOP_LEVEL_KEYS) if head not in SECTIONS else f" (give {head}.<key>=VALUE)"
            raise ExperimentError(f"{where}: override {dotted}: unknown key; allowed: {', '.join(allowed)}{hint}")
    shown = " ".join(f"{key}={_toml_value(value)}" for key, value in flat.items())
    return merged, f"{where} with {shown}"


def to_toml(raw: dict) -> str:
    """An experiment (a dict of the shape ``tomllib`` returns) as TOML text: top-level keys, then the tables."""
    lines = [f"{key} = {_toml_value(value)}" for key, value in raw.items() if not isinstance(value, Mapping)]
    for key, table in raw.items():
        if isinstance(table, Mapping):
            lines += ["", f"[{key}]", *(f"{k} = {_toml_value(v)}" for k, v in table.items())]
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    """One value in TOML syntax (what an experiment holds: strings, numbers, booleans, lists of them)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return ("-inf" if value < 0 else "inf") if math.isinf(value) else "nan" if math.isnan(value) else repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    return json.dumps(str(value))  # not a TOML type: validation refuses it; this only labels it


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
        listed = key in LIST_SETTINGS.get(section, ())  # a list is one value; a list of lists, an axis
        is_axis = isinstance(value, list) and (not listed or (value and all(isinstance(v, list) for v in value)))
        values = value if is_axis else [value]
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
            message = (
                unknown_name_message(name, TASKS, imports_hint=IMPORTS_HINT.format(kind="task"))
                if isinstance(name, str)
                else f"must be a string (got {name!r})"
            )
            raise ExperimentError(f"{where}: task.name: {message}")
        cls = TASKS[name]
        tasks.append(_validate(where, "task", cls, combo, f"task {name!r}"))
    return tasks


def _expand_models(where: str, table: dict, tasks: list[Task]) -> dict[Task, list[tuple[ModelConfig, int | None]]]:
    """Per task, its models and the ``params`` target each was sized for (None when ``hidden`` was given).

    ``[model]`` gives exactly one of ``hidden`` and ``params``; with ``params = N`` each
    model gets the hidden size whose parameter count, for the task's input and output
    sizes, is closest to N.
    """
    allowed = ["params", *ModelConfig.model_fields]
    _check_keys(where, "model", table, allowed)
    if "cell" not in table:
        raise ExperimentError(f"{where}: model.cell: missing")
    if ("hidden" in table) == ("params" in table):
        given = "both" if "hidden" in table else "neither"
        raise ExperimentError(
            f"{where}: model.params: give exactly one of hidden (a width) and params (a parameter count); {given} given"
        )
    combos = _grid(where, "model", table)
    for combo in combos:
        target = combo.get("params")
        if target is not None and (isinstance(target, bool) or not isinstance(target, int) or target <= 0):
            raise ExperimentError(f"{where}: model.params: must be a positive integer (got {target!r})")
    models: dict[Task, list[tuple[ModelConfig, int | None]]] = {}
    for task in tasks:
        models[task] = []
        for combo in combos:
            fields = {k: v for k, v in combo.items() if k != "params"}
            target = combo.get("params")
            if target is not None:
                unit = _hidden_unit(fields)
                smallest = _validate(where, "model", ModelConfig, {**fields, "hidden": unit}, "model")
                fields["hidden"] = hidden_for_params(smallest, task.input_dim, task.output_dim, target)
                if fields["hidden"] is None:
                    widest = MAX_HIDDEN // unit * unit
                    low = param_count(smallest, task.input_dim, task.output_dim)
                    high = param_count(smallest.model_copy(update={"hidden": widest}), task.input_dim, task.output_dim)
                    raise ExperimentError(
                        f"{where}: model.params: no {smallest.label} on task {task.name!r} has about {target} "
                        f"parameters; allowed: {low} (hidden {unit}) to {high} (hidden {widest})"
                    )
            models[task].append((_validate(where, "model", ModelConfig, fields, "model"), target))
    return models


def _hidden_unit(fields: dict) -> int:
    """The smallest hidden size a model may have: its heads (given, or the cell's default) where it has heads, else 1.

    Attention's ``heads`` must divide ``hidden``; a heads value that is not a positive
    integer is left for the model's validation to refuse.
    """
    name = fields.get("cell")
    cell = CELLS.get(name) if isinstance(name, str) else None
    heads = fields.get("heads")
    if heads is None and cell is not None:
        heads = {f.name: f.default for f in dataclasses.fields(cell)}.get("heads")
    return heads if isinstance(heads, int) and not isinstance(heads, bool) and heads > 0 else 1


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
