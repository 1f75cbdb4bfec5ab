"""Study specs: what to tune, how to judge it, and how much to spend.

A spec is a YAML file or a :class:`StudySpec` built in Python. Both go through the
same validation, which runs before anything is written to a store: every problem is
reported as one line naming the field, the value and what would be right.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ._exceptions import SpecError
from .storage import Bound

DIRECTIONS = ("maximize", "minimize")
SAMPLERS = ("tpe", "nsga2", "gp", "random", "grid", "cmaes")
EARLY_STOPPING = ("none", "asha", "hyperband", "median")
STARTS = ("center", "sampled")
PARAM_TYPES = ("float", "int", "categorical")
PRUNE_STRUCTURES = ("unstructured", "structured")
QUANTIZE_MODES = ("none", "int8", "float8")
DISTILL_MODES = ("none", "kd")
KEEP_FLOAT_MODES = ("none", "ends", "sensitive")
OPTIMIZERS = ("sgd", "adamw", "adam")
LR_SCHEDULES = ("constant", "cosine")
RUNTIMES = ("torch", "onnxruntime")
COMPILE_MODES = ("auto", "always", "never")
ARTIFACT_KEEP = ("pareto", "all", "none")

# Metrics tuner measures on every trial's shipped model, whatever the workload.
MEASURED_METRICS = (
    "accuracy",
    "test_accuracy",
    "size_bytes",
    "latency_ms",
    "latency_ms_p90",
    "latency_ms_batch",
    "latency_ms_batch_p90",
    "param_count",
    "sparsity",
    "train_time_s",
    "epochs",
)
MAX_COMPRESSIONS_PER_TRAINING = 16
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def _field(path: str, value: Any, expected: str) -> SpecError:
    return SpecError(f"spec field '{path}': got {value!r}; expected {expected}")


def _check_keys(path: str, data: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    for key in data:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(allowed)}"
            where = f"{path}.{key}" if path else str(key)
            raise SpecError(f"spec field '{where}': unknown key; {hint}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number(
    path: str,
    value: Any,
    *,
    minimum: float | None = None,
    integer: bool = False,
    strict_min: bool = False,
) -> float:
    if integer and (not isinstance(value, int) or isinstance(value, bool)):
        raise _field(path, value, "an integer")
    if not _is_number(value):
        raise _field(path, value, "a number")
    if minimum is not None and (value < minimum or (strict_min and value == minimum)):
        op = ">" if strict_min else ">="
        raise _field(path, value, f"a number {op} {minimum:g}")
    return value


def _mapping(path: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _field(path, value, "a mapping of keys to values")
    return value


@dataclass(frozen=True)
class ParamSpec:
    """One searched (or fixed) hyperparameter."""

    name: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()
    value: Any = None
    when: dict[str, tuple[Any, ...]] = field(default_factory=dict)

    @property
    def is_fixed(self) -> bool:
        return self.type == "fixed"

    def domain_values(self) -> tuple[Any, ...]:
        """Every value the parameter can take, where that is a finite list."""
        if self.type == "fixed":
            return (self.value,)
        if self.type == "categorical":
            return self.choices
        if self.type == "int" and not self.log:
            step = int(self.step or 1)
            return tuple(range(int(self.low or 0), int(self.high or 0) + 1, step))
        raise SpecError(
            f"spec field 'search_space.{self.name}': a {self.type} range has no finite grid; "
            "expected categorical choices or an int range for sampler 'grid'"
        )


def _parse_param(name: str, raw: Any) -> ParamSpec:
    path = f"search_space.{name}"
    if not _NAME.match(str(name)):
        raise _field("search_space", name, "parameter names of letters, digits, '_', '.' or '-'")
    if not isinstance(raw, Mapping):
        if isinstance(raw, (list, tuple)):
            raise _field(path, raw, "a mapping with 'type', or a plain fixed value")
        return ParamSpec(name=name, type="fixed", value=raw)
    _check_keys(path, raw, ("type", "low", "high", "log", "step", "choices", "value", "when"))
    kind = raw.get("type")
    if kind == "fixed" or (kind is None and "value" in raw):
        if "value" not in raw:
            raise SpecError(f"spec field '{path}.value': missing; a fixed parameter needs a value")
        return ParamSpec(name=name, type="fixed", value=raw["value"], when=_parse_when(path, raw))
    if kind not in PARAM_TYPES:
        raise _field(f"{path}.type", kind, f"one of {', '.join(PARAM_TYPES)}")
    when = _parse_when(path, raw)
    if kind == "categorical":
        for key in ("low", "high", "log", "step"):
            if key in raw:
                raise SpecError(f"spec field '{path}.{key}': not used by a categorical parameter")
        choices = raw.get("choices")
        if not isinstance(choices, (list, tuple)):
            raise _field(f"{path}.choices", choices, "a list of values")
        if len(choices) == 0:
            raise _field(f"{path}.choices", choices, "at least one choice")
        for c in choices:
            if not (c is None or isinstance(c, (str, int, float, bool))):
                raise _field(f"{path}.choices", c, "choices that are strings, numbers or booleans")
        if len(set(map(repr, choices))) != len(choices):
            raise _field(f"{path}.choices", list(choices), "distinct choices")
        return ParamSpec(name=name, type="categorical", choices=tuple(choices), when=when)
    if "choices" in raw:
        raise SpecError(f"spec field '{path}.choices': only categorical parameters have choices")
    integer = kind == "int"
    for key in ("low", "high"):
        if key not in raw:
            raise SpecError(
                f"spec field '{path}.{key}': missing; a {kind} parameter needs low and high"
            )
    low = _number(f"{path}.low", raw["low"], integer=integer)
    high = _number(f"{path}.high", raw["high"], integer=integer)
    if low > high:
        raise SpecError(f"spec field '{path}': low={low!r} > high={high!r}; expected low <= high")
    log = raw.get("log", False)
    if not isinstance(log, bool):
        raise _field(f"{path}.log", log, "true or false")
    step = raw.get("step")
    if step is not None:
        step = _number(f"{path}.step", step, minimum=0, strict_min=True, integer=integer)
        if log:
            raise SpecError(f"spec field '{path}': step and log together; expected one of them")
    if log and low <= 0:
        raise SpecError(f"spec field '{path}.low': got {low!r} with log: true; expected low > 0")
    return ParamSpec(name=name, type=kind, low=low, high=high, log=log, step=step, when=when)


def _parse_when(path: str, raw: Mapping[str, Any]) -> dict[str, tuple[Any, ...]]:
    when = raw.get("when")
    if when is None:
        return {}
    when = _mapping(f"{path}.when", when)
    if not when:
        raise _field(f"{path}.when", dict(when), "a mapping such as {optimizer: sgd}")
    out: dict[str, tuple[Any, ...]] = {}
    for other, values in when.items():
        out[str(other)] = tuple(values) if isinstance(values, (list, tuple)) else (values,)
    return out


@dataclass(frozen=True)
class SamplerSpec:
    """The sampler, its seed, and where a new study starts: ``center`` (the first trial at
    the middle of the search space, then the sampler's) or ``sampled`` (the sampler from
    the first trial on). Left ``None``, it is ``center`` but for ``random`` and ``grid``."""

    name: str = "tpe"
    seed: int | None = None
    start: str | None = None


@dataclass(frozen=True)
class EarlyStoppingSpec:
    """When trials are stopped before ``budget.max_epochs`` (see ``tuner._early_stopping``).

    ``min_epochs`` is the first rung (``median``: the first epoch judged); rungs follow
    at ``min_epochs * reduction_factor**k`` epochs. Nothing is stopped at a rung (or an
    epoch) until ``min_trials`` other trials have reached it.
    """

    name: str = "none"
    min_epochs: int = 1
    reduction_factor: int = 3
    min_trials: int = 3


@dataclass(frozen=True)
class Budget:
    """How many trials, how long each trains, and how long the study may run.

    ``compressions_per_training`` K > 1 reuses a trained model: after a trial whose float
    model is at least as accurate as the median trained so far, the same worker runs up
    to K - 1 more trials with the same training parameters and new compression settings
    (the sampler's, or a milder or int8 step from the last one's cost), compressing a copy
    of the model it already trained (no epochs spent but the fine-tune's). Every one is a
    trial of ``n_trials``.
    """

    n_trials: int = 30
    max_epochs: int = 15
    timeout_s: float | None = None
    compressions_per_training: int = 1


@dataclass(frozen=True)
class Resources:
    """What one trial needs. With ``workers_per_trial`` N > 1 the trial trains
    data-parallel in N processes (``tuner._ddp``), each with ``cpus`` and ``gpus``."""

    cpus: float = 1
    gpus: float = 0
    workers_per_trial: int = 1


@dataclass(frozen=True)
class MeasureSpec:
    """How latency is measured: batch 1 and ``batch_size``, after warm-up, repeated.

    ``compile`` (torch runtime): ``auto`` runs ``torch.compile`` where a kernel needs it to be
    fast (int8 on the CPU, float8 on the GPU), ``always`` on every shipped model, ``never`` not at all. Compile
    time is recorded apart from latency.
    """

    batch_size: int = 32
    warmup: int = 10
    repeats: int = 50
    threads: int | None = None
    runtime: str = "torch"
    compile: str = "auto"
    target: str | None = None


@dataclass(frozen=True)
class ArtifactsSpec:
    """Which trials keep their compressed model (``pareto``, ``all``, ``none``), and where.

    ``path`` defaults to ``tuner-artifacts`` next to a SQLite store file, else
    ``./tuner-artifacts``; each study gets a sub-folder. ``in_store`` keeps the model
    files in the study store itself instead (a table of its database), so that workers
    and readers on other machines share them with no shared disk; unset, it is on for a
    database server's store (PostgreSQL, MySQL) without a ``path``. ``tensorboard`` (on by
    default) writes every trial's curve, metrics and hyperparameters as TensorBoard event
    files in the folder's sub-folder ``tensorboard``.
    """

    keep: str = "pareto"
    path: str | None = None
    tensorboard: bool = True
    in_store: bool | None = None


@dataclass(frozen=True)
class NightlySpec:
    """How ``tuner nightly`` judges a night against the last one.

    ``reference_point`` fixes the hypervolume's reference per objective (maximized
    objectives default to 0; others to the value the first night recorded). With
    ``retime`` both nights' fronts are timed again side by side before they are compared
    (see ``tuner._retime``), so that a machine faster or slower on one night does not move
    the verdict. With ``keep_nights`` each night ends by deleting the spec's nights before
    the latest ``keep_nights`` (tonight's included), with their kept models and runs.
    """

    reference_point: dict[str, float] = field(default_factory=dict)
    regression_threshold: float = 0.02
    webhook: str | None = None
    retime: bool = False
    keep_nights: int | None = None


@dataclass(frozen=True)
class CVSpec:
    """Cross-validated trial scores (see ``tuner._cv``): ``folds`` models per trial, each
    scored on its held-out fold; ``accuracy`` is their mean. 0 turns it off."""

    folds: int = 0


MAX_FOLDS = 20
_TOP_KEYS = (
    "name",
    "workload",
    "storage",
    "objectives",
    "constraints",
    "search_space",
    "sampler",
    "early_stopping",
    "budget",
    "resources",
    "measure",
    "nightly",
    "artifacts",
    "cv",
)


@dataclass(frozen=True)
class StudySpec:
    """A study: the workload, its search space, the objectives and the budget.

    Build it from YAML with :func:`tuner.load_spec`, or directly::

        spec = tuner.StudySpec(
            name="digits-quick",
            workload="digits-mlp",
            search_space={
                "lr": {"type": "float", "low": 1e-3, "high": 0.3, "log": True},
                "prune_threshold": {"type": "float", "low": 0.0, "high": 0.9},
                "quantize": {"type": "categorical", "choices": ["none", "int8"]},
            },
            budget={"n_trials": 10, "max_epochs": 5},
        )

    Nested fields take mappings or the dataclasses themselves. Every field is checked
    at construction; a problem raises :class:`tuner.SpecError` naming the field. Once
    built, each field holds its checked form: ``search_space`` maps names to
    :class:`ParamSpec`, ``constraints`` is a tuple of :class:`tuner.storage.Bound`, and
    each section is its dataclass.
    """

    name: str
    workload: str
    search_space: Mapping[str, ParamSpec]
    objectives: Mapping[str, str] = field(
        default_factory=lambda: {
            "accuracy": "maximize",
            "size_bytes": "minimize",
            "latency_ms": "minimize",
        }
    )
    storage: str | None = None
    constraints: tuple[Bound, ...] = ()
    sampler: SamplerSpec = field(default_factory=SamplerSpec)
    early_stopping: EarlyStoppingSpec = field(default_factory=EarlyStoppingSpec)
    budget: Budget = field(default_factory=Budget)
    resources: Resources = field(default_factory=Resources)
    measure: MeasureSpec = field(default_factory=MeasureSpec)
    nightly: NightlySpec = field(default_factory=NightlySpec)
    artifacts: ArtifactsSpec = field(default_factory=ArtifactsSpec)
    cv: CVSpec = field(default_factory=CVSpec)

    if TYPE_CHECKING:
        # What construction accepts: each field in its checked form, or the plain data
        # (mappings, a sampler name) that __post_init__ checks and converts.
        def __init__(
            self,
            name: str,
            workload: str,
            search_space: Mapping[str, ParamSpec | Mapping[str, Any] | Any],
            objectives: Mapping[str, str] = ...,
            storage: str | None = ...,
            constraints: tuple[Bound, ...] | Mapping[str, Mapping[str, float]] | None = ...,
            sampler: SamplerSpec | Mapping[str, Any] | str = ...,
            early_stopping: EarlyStoppingSpec | Mapping[str, Any] | str | None = ...,
            budget: Budget | Mapping[str, Any] = ...,
            resources: Resources | Mapping[str, Any] = ...,
            measure: MeasureSpec | Mapping[str, Any] = ...,
            nightly: NightlySpec | Mapping[str, Any] = ...,
            artifacts: ArtifactsSpec | Mapping[str, Any] = ...,
            cv: CVSpec | Mapping[str, Any] = ...,
        ) -> None: ...

    def __post_init__(self) -> None:
        _validate_into(self)

    @property
    def params(self) -> dict[str, ParamSpec]:
        return dict(self.search_space)

    @property
    def directions(self) -> list[str]:
        return list(self.objectives.values())

    def with_overrides(self, **changes: Any) -> StudySpec:
        """A copy with top-level fields replaced (validated again)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain data (what a YAML file with the same meaning holds)."""
        space: dict[str, Any] = {}
        for p in self.params.values():
            if p.is_fixed and not p.when:
                space[p.name] = p.value
                continue
            entry: dict[str, Any] = {"type": p.type}
            if p.type == "fixed":
                entry["value"] = p.value
            elif p.type == "categorical":
                entry["choices"] = list(p.choices)
            else:
                entry.update(low=p.low, high=p.high)
                if p.log:
                    entry["log"] = True
                if p.step is not None:
                    entry["step"] = p.step
            if p.when:
                entry["when"] = {k: list(v) if len(v) > 1 else v[0] for k, v in p.when.items()}
            space[p.name] = entry
        constraints = {
            c.metric: {k: v for k, v in (("max", c.max), ("min", c.min)) if v is not None}
            for c in self.constraints
        }
        return {
            "name": self.name,
            "workload": self.workload,
            **({"storage": self.storage} if self.storage else {}),
            "objectives": dict(self.objectives),
            "constraints": constraints,
            "search_space": space,
            "sampler": {
                "name": self.sampler.name,
                "seed": self.sampler.seed,
                "start": self.sampler.start,
            },
            "early_stopping": {
                "name": self.early_stopping.name,
                "min_epochs": self.early_stopping.min_epochs,
                "reduction_factor": self.early_stopping.reduction_factor,
                "min_trials": self.early_stopping.min_trials,
            },
            "budget": {
                "n_trials": self.budget.n_trials,
                "max_epochs": self.budget.max_epochs,
                "timeout_s": self.budget.timeout_s,
                **(
                    {"compressions_per_training": self.budget.compressions_per_training}
                    if self.budget.compressions_per_training > 1
                    else {}
                ),
            },
            "resources": {
                "cpus": self.resources.cpus,
                "gpus": self.resources.gpus,
                **(
                    {"workers_per_trial": self.resources.workers_per_trial}
                    if self.resources.workers_per_trial > 1
                    else {}
                ),
            },
            "measure": {
                "batch_size": self.measure.batch_size,
                "warmup": self.measure.warmup,
                "repeats": self.measure.repeats,
                "threads": self.measure.threads,
                "runtime": self.measure.runtime,
                "compile": self.measure.compile,
                **({"target": self.measure.target} if self.measure.target else {}),
            },
            "artifacts": {
                "keep": self.artifacts.keep,
                **({"path": self.artifacts.path} if self.artifacts.path else {}),
                "tensorboard": self.artifacts.tensorboard,
                **(
                    {"in_store": self.artifacts.in_store}
                    if self.artifacts.in_store is not None
                    else {}
                ),
            },
            **({"cv": {"folds": self.cv.folds}} if self.cv.folds else {}),
            "nightly": {
                "reference_point": dict(self.nightly.reference_point),
                "regression_threshold": self.nightly.regression_threshold,
                "webhook": self.nightly.webhook,
                "retime": self.nightly.retime,
                **(
                    {"keep_nights": self.nightly.keep_nights}
                    if self.nightly.keep_nights is not None
                    else {}
                ),
            },
        }


def _set(spec: StudySpec, name: str, value: Any) -> None:
    object.__setattr__(spec, name, value)


# The built-in workloads by name (``tuner._builtin_workloads`` has them): a spec naming one
# is checked without importing torch, so a driver that only dispatches never loads it.
BUILTIN_WORKLOAD_NAMES = ("digits-mlp", "mnist1d-cnn", "mnist1d-transformer")


def _validate_into(spec: StudySpec) -> None:
    if not isinstance(spec.name, str) or not _NAME.match(spec.name):
        raise _field("name", spec.name, "1-128 letters, digits, '_', '.' or '-'")
    if not isinstance(spec.workload, str) or not spec.workload:
        raise _field(
            "workload", spec.workload, "a built-in workload name or 'package.module:function'"
        )
    if spec.workload in BUILTIN_WORKLOAD_NAMES:
        extra_metrics: tuple[str, ...] = ()
    else:
        from ._builtin_workloads import resolve_workload

        extra_metrics = resolve_workload(spec.workload).extra_metrics
    if spec.storage is not None and (not isinstance(spec.storage, str) or not spec.storage):
        raise _field("storage", spec.storage, "a storage URL such as sqlite:///tuner.db")

    # search space
    raw_space = _mapping("search_space", spec.search_space)
    if not raw_space:
        raise _field("search_space", dict(raw_space), "at least one parameter")
    params: dict[str, ParamSpec] = {}
    for name, raw in raw_space.items():
        params[str(name)] = raw if isinstance(raw, ParamSpec) else _parse_param(str(name), raw)
    for p in params.values():
        for other, values in p.when.items():
            if other not in params:
                close = difflib.get_close_matches(other, list(params), n=1)
                hint = (
                    f"did you mean '{close[0]}'?" if close else f"parameters: {', '.join(params)}"
                )
                raise SpecError(
                    f"spec field 'search_space.{p.name}.when': names unknown parameter '{other}'; {hint}"
                )
            if other == p.name:
                raise SpecError(
                    f"spec field 'search_space.{p.name}.when': a parameter cannot depend on itself"
                )
            target = params[other]
            if target.type in ("categorical", "fixed"):
                allowed = target.domain_values()
                for v in values:
                    if v not in allowed:
                        raise _field(
                            f"search_space.{p.name}.when.{other}", v, f"one of {list(allowed)}"
                        )
    _check_acyclic(params)
    _check_reserved(params)
    _set(spec, "search_space", params)

    # objectives
    objectives = _mapping("objectives", spec.objectives)
    if not objectives:
        raise _field(
            "objectives", dict(objectives), "at least one metric, e.g. {accuracy: maximize}"
        )
    known = tuple(MEASURED_METRICS) + tuple(extra_metrics)
    for metric, direction in objectives.items():
        if metric not in known:
            close = difflib.get_close_matches(str(metric), known, n=1)
            hint = (
                f"did you mean '{close[0]}'?" if close else f"metrics reported: {', '.join(known)}"
            )
            raise SpecError(
                f"spec field 'objectives.{metric}': workload '{spec.workload}' does not report "
                f"this metric; {hint}"
            )
        if direction not in DIRECTIONS:
            raise _field(f"objectives.{metric}", direction, "maximize or minimize")
    _set(spec, "objectives", {str(k): str(v) for k, v in objectives.items()})

    # constraints
    constraints: list[Bound] = []
    raw_constraints: Any = spec.constraints
    if isinstance(raw_constraints, (list, tuple)) and all(
        isinstance(c, Bound) for c in raw_constraints
    ):
        constraints = list(raw_constraints)
    else:
        raw_constraints = _mapping("constraints", raw_constraints or {})
        for metric, bound in raw_constraints.items():
            path = f"constraints.{metric}"
            if metric not in known:
                close = difflib.get_close_matches(str(metric), known, n=1)
                hint = (
                    f"did you mean '{close[0]}'?"
                    if close
                    else f"metrics reported: {', '.join(known)}"
                )
                raise SpecError(f"spec field '{path}': unknown metric; {hint}")
            bound = _mapping(path, bound)
            _check_keys(path, bound, ("max", "min"))
            if not bound:
                raise _field(path, dict(bound), "max and/or min, e.g. {max: 2.0}")
            hi = _number(f"{path}.max", bound["max"]) if "max" in bound else None
            lo = _number(f"{path}.min", bound["min"]) if "min" in bound else None
            if hi is not None and lo is not None and lo > hi:
                raise SpecError(
                    f"spec field '{path}': min={lo!r} > max={hi!r}; expected min <= max"
                )
            constraints.append(Bound(str(metric), min=lo, max=hi))
    _set(spec, "constraints", tuple(constraints))

    # sampler
    sampler = _as_raw(spec.sampler, SamplerSpec)
    if isinstance(sampler, str):
        sampler = {"name": sampler}
    sampler = _mapping("sampler", sampler)
    _check_keys("sampler", sampler, ("name", "seed", "start"))
    name = sampler.get("name", "tpe")
    if name not in SAMPLERS:
        close = difflib.get_close_matches(str(name), SAMPLERS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise _field("sampler.name", name, f"one of {', '.join(SAMPLERS)}{hint}")
    seed = sampler.get("seed")
    if seed is not None:
        seed = int(_number("sampler.seed", seed, minimum=0, integer=True))
    start = sampler.get("start")
    if start is None:
        start = "sampled" if name in ("random", "grid") else "center"
    if start not in STARTS:
        raise _field("sampler.start", start, f"one of {', '.join(STARTS)}")
    if start == "center" and name == "grid":
        raise _field("sampler.start", start, "'sampled' for sampler 'grid' (it visits its grid)")
    sampler = SamplerSpec(name=name, seed=seed, start=start)
    if sampler.name == "cmaes" and len(spec.objectives) > 1:
        raise _field(
            "sampler.name",
            "cmaes",
            "tpe, nsga2, gp or random for a multi-objective study (cmaes has one objective)",
        )
    if sampler.name == "grid":
        for p in params.values():
            p.domain_values()
    _set(spec, "sampler", sampler)

    # early stopping
    es: Any = spec.early_stopping
    if es is None or isinstance(es, str):
        es = {"name": es or "none"}
    if isinstance(es, EarlyStoppingSpec):
        es = {f.name: getattr(es, f.name) for f in fields(EarlyStoppingSpec)}
    es = _mapping("early_stopping", es)
    _check_keys("early_stopping", es, ("name", "min_epochs", "reduction_factor", "min_trials"))
    if es.get("name", "none") not in EARLY_STOPPING:
        close = difflib.get_close_matches(str(es.get("name")), EARLY_STOPPING, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise _field(
            "early_stopping.name", es.get("name"), f"one of {', '.join(EARLY_STOPPING)}{hint}"
        )
    es = EarlyStoppingSpec(
        name=es.get("name", "none"),
        min_epochs=int(
            _number(
                "early_stopping.min_epochs",
                es.get("min_epochs", EarlyStoppingSpec.min_epochs),
                minimum=1,
                integer=True,
            )
        ),
        reduction_factor=int(
            _number(
                "early_stopping.reduction_factor",
                es.get("reduction_factor", EarlyStoppingSpec.reduction_factor),
                minimum=2,
                integer=True,
            )
        ),
        min_trials=int(
            _number(
                "early_stopping.min_trials",
                es.get("min_trials", EarlyStoppingSpec.min_trials),
                minimum=0,
                integer=True,
            )
        ),
    )
    _set(spec, "early_stopping", es)

    # budget
    budget = _as_raw(spec.budget, Budget)
    budget = _mapping("budget", budget)
    _check_keys(
        "budget", budget, ("n_trials", "max_epochs", "timeout_s", "compressions_per_training")
    )
    n_trials = int(_number("budget.n_trials", budget.get("n_trials", 30), minimum=1, integer=True))
    max_epochs = int(
        _number("budget.max_epochs", budget.get("max_epochs", 15), minimum=1, integer=True)
    )
    timeout = budget.get("timeout_s")
    if timeout is not None:
        timeout = float(_number("budget.timeout_s", timeout, minimum=0, strict_min=True))
    compressions = int(
        _number(
            "budget.compressions_per_training",
            budget.get("compressions_per_training", 1),
            minimum=1,
            integer=True,
        )
    )
    if compressions > MAX_COMPRESSIONS_PER_TRAINING:
        raise _field(
            "budget.compressions_per_training",
            compressions,
            f"a whole number from 1 to {MAX_COMPRESSIONS_PER_TRAINING}",
        )
    budget = Budget(
        n_trials=n_trials,
        max_epochs=max_epochs,
        timeout_s=timeout,
        compressions_per_training=compressions,
    )
    _set(spec, "budget", budget)
    if es.name != "none" and es.min_epochs >= budget.max_epochs:
        raise _field(
            "early_stopping.min_epochs",
            es.min_epochs,
            f"fewer than budget.max_epochs ({budget.max_epochs}), else no trial is ever stopped",
        )

    # resources
    res = _as_raw(spec.resources, Resources)
    res = _mapping("resources", res)
    _check_keys("resources", res, ("cpus", "gpus", "workers_per_trial"))
    cpus = _number("resources.cpus", res.get("cpus", 1), minimum=0, strict_min=True)
    gpus = _number("resources.gpus", res.get("gpus", 0), minimum=0)
    if gpus > 1 and gpus != int(gpus):
        raise _field("resources.gpus", gpus, "a fraction below 1 (e.g. 0.25) or a whole number")
    ranks = int(
        _number(
            "resources.workers_per_trial", res.get("workers_per_trial", 1), minimum=1, integer=True
        )
    )
    if ranks > 1 and 0 < gpus < 1:
        raise _field(
            "resources.gpus",
            gpus,
            "a whole number with workers_per_trial > 1 (each rank gets its own GPUs; NCCL "
            "does not share one device between ranks)",
        )
    res = Resources(cpus=cpus, gpus=gpus, workers_per_trial=ranks)
    _set(spec, "resources", res)

    # measurement
    measure = _as_raw(spec.measure, MeasureSpec)
    measure = _mapping("measure", measure)
    _check_keys(
        "measure",
        measure,
        ("batch_size", "warmup", "repeats", "threads", "runtime", "compile", "target"),
    )
    threads = measure.get("threads")
    runtime = _runtime(measure.get("runtime", "torch"))
    measure = MeasureSpec(
        batch_size=int(
            _number("measure.batch_size", measure.get("batch_size", 32), minimum=1, integer=True)
        ),
        warmup=int(_number("measure.warmup", measure.get("warmup", 10), minimum=0, integer=True)),
        repeats=int(
            _number("measure.repeats", measure.get("repeats", 50), minimum=3, integer=True)
        ),
        threads=None
        if threads is None
        else int(_number("measure.threads", threads, minimum=1, integer=True)),
        runtime=runtime,
        compile=_compile_mode(measure.get("compile", "auto")),
        target=_target(measure.get("target"), runtime, res),
    )
    _set(spec, "measure", measure)
    _check_qat_device(spec)
    _check_float8(spec)
    _set(spec, "artifacts", _parse_artifacts(spec.artifacts))
    _set(spec, "nightly", _parse_nightly(spec.nightly, spec.objectives))
    _set(spec, "cv", _parse_cv(spec.cv, spec.early_stopping))
    _check_reuse(spec)


def _check_reuse(spec: Any) -> None:
    """A trained model is reused only where one model is trained, by one process."""
    k = spec.budget.compressions_per_training
    if k == 1:
        return
    if spec.cv.folds:
        raise _field("budget.compressions_per_training", k, "1 with cv (each fold trains anew)")
    if spec.resources.workers_per_trial > 1:
        raise _field(
            "budget.compressions_per_training", k, "1 with resources.workers_per_trial > 1"
        )
    if spec.sampler.name == "grid":
        raise _field(
            "budget.compressions_per_training", k, "1 with sampler grid (it runs each point once)"
        )


def _as_raw(value: Any, section: type) -> Any:
    """A section given as its dataclass, as the mapping it stands for (checked the same way)."""
    if isinstance(value, section):
        return {f.name: getattr(value, f.name) for f in fields(section)}
    return value


def _check_float8(spec: Any) -> None:
    """float8 is torchao's GPU kernels (compute capability 8.9 and up): GPU trials, torch runtime."""
    quantize = spec.params.get("quantize")
    if quantize is None or "float8" not in quantize.domain_values():
        return
    others = ", ".join(m for m in QUANTIZE_MODES if m != "float8")
    if not spec.resources.gpus:
        raise SpecError(
            "spec field 'search_space.quantize': float8 runs on GPU trials (torchao's float8 "
            "kernels need an NVIDIA GPU of compute capability 8.9 or more, e.g. L4 or H100), "
            f"but resources.gpus is 0; expected resources.gpus > 0, or choices from {others}"
        )
    if spec.measure.runtime != "torch":
        raise SpecError(
            "spec field 'search_space.quantize': float8 is measured in the torch runtime on "
            f"the GPU, but measure.runtime is {spec.measure.runtime} (ONNX Runtime quantizes "
            f"to int8 only); expected measure.runtime: torch, or choices from {others}"
        )


def _check_qat_device(spec: Any) -> None:
    """Quantization-aware training makes CPU (x86) int8; GPU trials quantize with torchao."""
    qat = spec.params.get("qat_epochs")
    if qat is None or not spec.resources.gpus:
        return
    values = qat.domain_values() if qat.type in ("categorical", "fixed") else (qat.high,)
    if any(_is_number(v) and v > 0 for v in values):
        raise SpecError(
            "spec field 'search_space.qat_epochs': quantization-aware training makes int8 for "
            f"the CPU, but resources.gpus is {spec.resources.gpus}; expected qat_epochs: 0 "
            "on GPU trials (they quantize with torchao on the GPU)"
        )


def _parse_nightly(raw: Any, objectives: Mapping[str, str]) -> NightlySpec:
    if isinstance(raw, NightlySpec):
        raw = {
            "reference_point": raw.reference_point,
            "regression_threshold": raw.regression_threshold,
            "webhook": raw.webhook,
            "retime": raw.retime,
            "keep_nights": raw.keep_nights,
        }
    raw = _mapping("nightly", raw if raw is not None else {})
    _check_keys(
        "nightly",
        raw,
        ("reference_point", "regression_threshold", "webhook", "retime", "keep_nights"),
    )
    reference = _mapping("nightly.reference_point", raw.get("reference_point") or {})
    for metric, value in reference.items():
        if metric not in objectives:
            raise _field(
                f"nightly.reference_point.{metric}",
                value,
                f"a key among the objectives ({', '.join(objectives)})",
            )
        _number(f"nightly.reference_point.{metric}", value)
    threshold = _number(
        "nightly.regression_threshold", raw.get("regression_threshold", 0.02), minimum=0
    )
    if threshold >= 1:
        raise _field(
            "nightly.regression_threshold", threshold, "a fraction 0 <= value < 1, e.g. 0.02"
        )
    webhook = raw.get("webhook")
    if webhook is not None and (
        not isinstance(webhook, str) or not re.match(r"^https?://[^\s/]+", webhook)
    ):
        raise _field("nightly.webhook", webhook, "an http:// or https:// URL")
    retime = raw.get("retime", False)
    if not isinstance(retime, bool):
        raise _field("nightly.retime", retime, "true or false")
    keep = raw.get("keep_nights")
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 2):
        raise _field(
            "nightly.keep_nights",
            keep,
            "an integer >= 2 (tonight, and last night, which tomorrow's night compares with), "
            "or none to keep every night",
        )
    return NightlySpec(
        reference_point={str(k): float(v) for k, v in reference.items()},
        regression_threshold=float(threshold),
        webhook=webhook,
        retime=retime,
        keep_nights=keep,
    )


def _target(value: Any, runtime: str, resources: Resources) -> str | None:
    """``measure.target``: the Ray custom resource of the nodes models are timed on."""
    if value is None:
        return None
    from ._target import check_target

    wrong = check_target(value)
    if wrong:
        raise _field("measure.target", value, wrong)
    if resources.gpus and runtime == "torch":
        # The torch runtime's model is made for the trial's GPU; the ONNX file runs anywhere.
        raise _field(
            "measure.target",
            value,
            "no target with resources.gpus > 0 in the torch runtime (its model is made for the "
            "trial's GPU); measure.runtime: onnxruntime times the file on the target's CPU",
        )
    return str(value)


def _compile_mode(value: Any) -> str:
    if value not in COMPILE_MODES:
        raise _field("measure.compile", value, f"one of {', '.join(COMPILE_MODES)}")
    return str(value)


def _runtime(value: Any) -> str:
    if value not in RUNTIMES:
        raise _field("measure.runtime", value, f"one of {', '.join(RUNTIMES)}")
    if value == "onnxruntime":
        import importlib.util

        missing = [m for m in ("onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
        if missing:
            raise _field(
                "measure.runtime",
                value,
                f"torch, or install {' and '.join(missing)}: pip install 'tuner[export]'",
            )
    return str(value)


def _parse_cv(raw: Any, early_stopping: EarlyStoppingSpec) -> CVSpec:
    raw = _mapping("cv", _as_raw(raw, CVSpec) if raw is not None else {})
    _check_keys("cv", raw, ("folds",))
    folds = raw.get("folds", 0)
    if folds == 0:
        return CVSpec()
    folds = int(_number("cv.folds", folds, minimum=2, integer=True))
    if folds > MAX_FOLDS:
        raise _field("cv.folds", folds, f"an integer from 2 to {MAX_FOLDS}")
    if early_stopping.name != "none":
        raise SpecError(
            f"spec field 'cv': early stopping ({early_stopping.name!r}) judges one learning "
            "curve per trial and cross-validation trains one per fold; set "
            "early_stopping: none with cv (see the README's cross-validation section)"
        )
    return CVSpec(folds=folds)


def _parse_artifacts(raw: Any) -> ArtifactsSpec:
    if isinstance(raw, ArtifactsSpec):
        raw = {
            "keep": raw.keep,
            "path": raw.path,
            "tensorboard": raw.tensorboard,
            "in_store": raw.in_store,
        }
    raw = _mapping("artifacts", raw if raw is not None else {})
    _check_keys("artifacts", raw, ("keep", "path", "tensorboard", "in_store"))
    keep = raw.get("keep", "pareto")
    if keep not in ARTIFACT_KEEP:
        raise _field("artifacts.keep", keep, f"one of {', '.join(ARTIFACT_KEEP)}")
    path = raw.get("path")
    if path is not None and (not isinstance(path, str) or not path.strip()):
        raise _field("artifacts.path", path, "a folder path, e.g. ./tuner-artifacts")
    tensorboard = raw.get("tensorboard", True)
    if not isinstance(tensorboard, bool):
        raise _field("artifacts.tensorboard", tensorboard, "true or false")
    in_store = raw.get("in_store")
    if in_store is not None and not isinstance(in_store, bool):
        raise _field(
            "artifacts.in_store", in_store, "true, false, or unset (on for a database server)"
        )
    return ArtifactsSpec(keep=str(keep), path=path, tensorboard=tensorboard, in_store=in_store)


def _check_acyclic(params: Mapping[str, ParamSpec]) -> None:
    state: dict[str, int] = {}

    def visit(name: str, trail: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = " -> ".join([*trail[trail.index(name) :], name])
            raise SpecError(
                f"spec field 'search_space.{name}.when': conditions form a cycle ({cycle})"
            )
        state[name] = 1
        for other in params[name].when:
            visit(other, [*trail, name])
        state[name] = 2

    for n in params:
        visit(n, [])


def _check_reserved(params: Mapping[str, ParamSpec]) -> None:
    """Parameters tuner itself acts on must stay in the range it can honour."""

    def values_of(p: ParamSpec) -> tuple[Any, ...]:
        return p.domain_values() if p.type in ("categorical", "fixed") else ()

    if "prune_threshold" in params:
        p = params["prune_threshold"]
        if p.type == "float" or p.type == "int":
            if (p.low or 0) < 0 or (p.high or 0) >= 1:
                raise SpecError(
                    f"spec field 'search_space.prune_threshold': range [{p.low}, {p.high}]; "
                    "expected a fraction of weights with 0 <= low <= high < 1"
                )
        else:
            for v in values_of(p):
                if not _is_number(v) or not 0 <= v < 1:
                    raise _field("search_space.prune_threshold", v, "a fraction 0 <= value < 1")
    for name, allowed in (
        ("prune_structure", PRUNE_STRUCTURES),
        ("quantize", QUANTIZE_MODES),
        ("optimizer", OPTIMIZERS),
        ("lr_schedule", LR_SCHEDULES),
        ("distill", DISTILL_MODES),
        ("keep_float", KEEP_FLOAT_MODES),
    ):
        if name in params:
            p = params[name]
            if p.type not in ("categorical", "fixed"):
                raise _field(
                    f"search_space.{name}.type", p.type, f"categorical over {', '.join(allowed)}"
                )
            for v in values_of(p):
                if v not in allowed:
                    raise _field(f"search_space.{name}", v, f"one of {', '.join(allowed)}")
    for name, minimum in (
        ("batch_size", 1),
        ("finetune_epochs", 0),
        ("qat_epochs", 0),
        ("prune_steps", 1),
    ):
        if name in params:
            p = params[name]
            vals = values_of(p) if p.type in ("categorical", "fixed") else (p.low,)
            for v in vals:
                if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
                    raise _field(f"search_space.{name}", v, f"an integer >= {minimum}")
    for name, positive, what in (
        ("lr", True, "a learning rate > 0"),
        ("finetune_lr", True, "a learning rate > 0"),
        ("distill_temperature", True, "a temperature > 0"),
        ("distill_alpha", False, "a weight 0 <= value <= 1"),
    ):
        if name in params:
            p = params[name]
            vals = values_of(p) if p.type in ("categorical", "fixed") else (p.low, p.high)
            for v in vals:
                if v is None:
                    continue
                if not _is_number(v) or (v <= 0 if positive else not 0 <= v <= 1):
                    raise _field(f"search_space.{name}", v, what)


def spec_from_dict(data: Any, *, source: str = "spec") -> StudySpec:
    """Build a :class:`StudySpec` from plain data (what a YAML file holds)."""
    if not isinstance(data, Mapping):
        raise SpecError(
            f"{source}: expected a mapping of spec fields at the top level, got {type(data).__name__}"
        )
    _check_keys("", data, _TOP_KEYS)
    for required in ("name", "workload", "search_space"):
        if required not in data:
            raise SpecError(f"spec field '{required}': missing; it is required")
    kwargs = {f.name: data[f.name] for f in fields(StudySpec) if f.name in data}
    for key in (
        "sampler",
        "early_stopping",
        "budget",
        "resources",
        "measure",
        "constraints",
        "nightly",
        "artifacts",
        "cv",
    ):
        if key in kwargs and kwargs[key] is None:
            del kwargs[key]
    return StudySpec(**kwargs)


def load_spec(source: str | Path | Mapping[str, Any] | StudySpec) -> StudySpec:
    """Load and validate a study spec from a YAML file, a mapping, or a spec.

    A name without a path that is not a file (``digits_mlp``) is looked up among the
    specs shipped in ``search_spaces/``.

    Raises:
        SpecError: one line naming the field, the value and what would be right.
    """
    if isinstance(source, StudySpec):
        return source
    if isinstance(source, Mapping):
        return spec_from_dict(source)
    path = Path(source)
    if not path.exists():
        shipped = _shipped_spec(str(source))
        if shipped is None:
            raise SpecError(
                f"spec file {str(source)!r} does not exist; expected a YAML file or one of "
                f"the shipped specs: {', '.join(shipped_specs())}"
            )
        path = shipped
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise SpecError(f"spec file {str(path)!r}{where}: {problem}") from exc
    except OSError as exc:
        raise SpecError(f"spec file {str(path)!r} cannot be read: {exc.strerror}") from exc
    return spec_from_dict(data, source=f"spec file {str(path)!r}")


def _spaces_dir() -> Path:
    from . import search_spaces

    return Path(search_spaces.__file__).parent


def shipped_specs() -> list[str]:
    return sorted(p.stem for p in _spaces_dir().glob("*.yaml"))


def _shipped_spec(name: str) -> Path | None:
    stem = Path(name).name.removesuffix(".yaml")
    candidate = _spaces_dir() / f"{stem.replace('-', '_')}.yaml"
    return candidate if candidate.exists() else None
