from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

import tuner
from tuner import SpecError, StudySpec
from tuner._spec import Budget, MeasureSpec, Resources, SamplerSpec, load_spec


def _with(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    import copy

    data = copy.deepcopy(base)
    keys = path.split(".")
    node = data
    for k in keys[:-1]:
        node = node[k]
    if value is _DELETE:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return data


_DELETE = object()


def test_shipped_specs_load() -> None:
    for name in ("digits_mlp", "mnist1d_cnn"):
        spec = load_spec(name)
        assert spec.objectives == {
            "accuracy": "maximize",
            "size_bytes": "minimize",
            "latency_ms": "minimize",
        }
        assert "prune_threshold" in spec.params and "quantize" in spec.params


def test_yaml_and_python_specs_are_the_same(tmp_path: Path, tiny_spec: Any) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(tiny_spec()))
    from_yaml = tuner.load_spec(path)
    from_python = tuner.StudySpec(**tiny_spec())
    assert from_yaml == from_python
    assert tuner.load_spec(from_yaml.to_dict()) == from_yaml


def test_fixed_values_and_int_step_log(tiny_spec: Any) -> None:
    spec = tuner.StudySpec(
        **_with(
            tiny_spec(),
            "search_space.hidden_units",
            {"type": "int", "low": 16, "high": 64, "step": 16},
        )
    )
    assert spec.params["hidden_units"].step == 16
    spec = tuner.StudySpec(
        **_with(
            tiny_spec(),
            "search_space.hidden_units",
            {"type": "int", "low": 16, "high": 256, "log": True},
        )
    )
    assert spec.params["hidden_units"].log
    assert tuner.StudySpec(**tiny_spec()).params["hidden_units"].value == 32


# One case per validation rule: (field path, bad value, words the message must hold).
RULES = [
    ("naem", "x", ["'naem'", "did you mean 'name'"]),
    ("search_space.lr.hgih", 1.0, ["search_space.lr.hgih", "did you mean 'high'"]),
    ("budget.n_trails", 3, ["budget.n_trails", "did you mean 'n_trials'"]),
    ("budget.n_trials", "ten", ["budget.n_trials", "'ten'", "integer"]),
    ("budget.n_trials", 0, ["budget.n_trials", "0", ">= 1"]),
    ("budget.compressions_per_training", 0, ["budget.compressions_per_training", ">= 1"]),
    ("budget.compressions_per_training", 17, ["budget.compressions_per_training", "1 to 16"]),
    ("budget.compressions_per_training", 2.5, ["budget.compressions_per_training", "integer"]),
    ("search_space.lr.low", 0.5, ["search_space.lr", "low=0.5 > high=0.1", "low <= high"]),
    (
        "search_space.lr",
        {"type": "float", "low": 0.0, "high": 0.1, "log": True},
        ["search_space.lr.low", "log: true", "low > 0"],
    ),
    (
        "search_space.lr",
        {"type": "float", "low": "a", "high": 0.1},
        ["search_space.lr.low", "'a'", "a number"],
    ),
    (
        "search_space.quantize",
        {"type": "categorical", "choices": []},
        ["search_space.quantize.choices", "at least one choice"],
    ),
    (
        "search_space.quantize",
        {"type": "categorical", "choices": ["none", "int4"]},
        ["search_space.quantize", "'int4'", "none, int8"],
    ),
    (
        "search_space.distill",
        {"type": "categorical", "choices": ["none", "teacher"]},
        ["search_space.distill", "'teacher'", "none, kd"],
    ),
    (
        "search_space.finetune_lr",
        {"type": "float", "low": -0.01, "high": 0.1},
        ["search_space.finetune_lr", "-0.01", "learning rate > 0"],
    ),
    (
        "search_space.qat_epochs",
        {"type": "categorical", "choices": [0, 1.5]},
        ["search_space.qat_epochs", "1.5", "integer >= 0"],
    ),
    (
        "search_space.prune_steps",
        {"type": "categorical", "choices": [1, 0]},
        ["search_space.prune_steps", "0", "integer >= 1"],
    ),
    (
        "search_space.lr_schedule",
        {"type": "categorical", "choices": ["constant", "linear"]},
        ["search_space.lr_schedule", "'linear'", "constant, cosine"],
    ),
    (
        "search_space.keep_float",
        {"type": "categorical", "choices": ["none", "first"]},
        ["search_space.keep_float", "'first'", "none, ends, sensitive"],
    ),
    (
        "search_space.distill_temperature",
        {"type": "float", "low": 0.0, "high": 8.0},
        ["search_space.distill_temperature", "0.0", "temperature > 0"],
    ),
    (
        "search_space.distill_alpha",
        {"type": "float", "low": 0.2, "high": 1.5},
        ["search_space.distill_alpha", "1.5", "0 <= value <= 1"],
    ),
    (
        "search_space.lr.type",
        "floaty",
        ["search_space.lr.type", "'floaty'", "float, int, categorical"],
    ),
    (
        "search_space.momentum.when",
        {"optimiser": "sgd"},
        ["search_space.momentum.when", "'optimiser'", "did you mean 'optimizer'"],
    ),
    (
        "search_space.momentum.when",
        {"optimizer": "rmsprop"},
        ["search_space.momentum.when.optimizer", "'rmsprop'", "sgd"],
    ),
    ("workload", "digits-mpl", ["workload", "'digits-mpl'", "digits-mlp"]),
    ("workload", "nosuchpkg.mod:fn", ["workload", "nosuchpkg.mod"]),
    ("sampler", {"name": "tpee"}, ["sampler.name", "'tpee'", "did you mean 'tpe'"]),
    ("sampler", {"name": "cmaes"}, ["sampler.name", "cmaes", "multi-objective"]),
    ("sampler", {"name": "grid"}, ["search_space.lr", "grid"]),
    ("sampler", {"name": "tpe", "start": "middle"}, ["sampler.start", "'middle'", "center"]),
    ("sampler", {"name": "grid", "start": "center"}, ["sampler.start", "'sampled'", "grid"]),
    (
        "objectives",
        {"acuracy": "maximize"},
        ["objectives.acuracy", "does not report", "did you mean 'accuracy'"],
    ),
    ("objectives", {"accuracy": "up"}, ["objectives.accuracy", "'up'", "maximize or minimize"]),
    (
        "constraints",
        {"latency_ms": {"max": 1.0, "min": 2.0}},
        ["constraints.latency_ms", "min <= max"],
    ),
    (
        "constraints",
        {"latency": {"max": 1.0}},
        ["constraints.latency", "did you mean 'latency_ms'"],
    ),
    (
        "search_space.prune_threshold",
        {"type": "float", "low": 0.0, "high": 1.5},
        ["search_space.prune_threshold", "high < 1"],
    ),
    ("resources", {"cpus": 0}, ["resources.cpus", "> 0"]),
    ("resources", {"gpus": 1.5}, ["resources.gpus", "fraction"]),
    ("early_stopping", "sometimes", ["early_stopping.name", "'sometimes'"]),
    ("search_space", {}, ["search_space", "at least one parameter"]),
    ("name", _DELETE, ["name", "missing"]),
]


@pytest.mark.parametrize(
    ("path", "value", "words"), RULES, ids=[r[0] + "-" + str(i) for i, r in enumerate(RULES)]
)
def test_validation_rule(path: str, value: Any, words: list[str], tiny_spec: Any) -> None:
    data = (
        _with(tiny_spec(), path, value)
        if "." in path or path in tiny_spec()
        else {**tiny_spec(), path: value}
    )
    with pytest.raises(tuner.SpecError) as err:
        tuner.load_spec(data)
    message = str(err.value)
    assert "\n" not in message
    for w in words:
        assert w in message, message


def test_when_cycle_is_refused(tiny_spec: Any) -> None:
    data = _with(
        tiny_spec(),
        "search_space.optimizer",
        {"type": "categorical", "choices": ["sgd", "adamw"], "when": {"momentum": 0.5}},
    )
    data["search_space"]["momentum"] = {
        "type": "categorical",
        "choices": [0.5, 0.9],
        "when": {"optimizer": "sgd"},
    }
    with pytest.raises(tuner.SpecError, match="cycle"):
        tuner.load_spec(data)


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nsearch_space: {lr: [1, 2\n")
    with pytest.raises(tuner.SpecError, match="line"):
        tuner.load_spec(path)


def test_missing_file_lists_shipped_specs(tmp_path: Path) -> None:
    with pytest.raises(tuner.SpecError, match="digits_mlp"):
        tuner.load_spec(tmp_path / "nope.yaml")


def test_user_workload_declares_extra_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_spec: Any
) -> None:
    (tmp_path / "extra_wl.py").write_text(
        "def fn(params, ctx):\n    raise RuntimeError\nfn.metrics = ['energy_mj']\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = tuner.load_spec(tiny_spec(workload="extra_wl:fn", objectives={"energy_mj": "minimize"}))
    assert spec.objectives == {"energy_mj": "minimize"}


def test_qat_on_a_gpu_trial_is_refused_in_one_line(tiny_spec: Any) -> None:
    spec = _with(tiny_spec(), "search_space.qat_epochs", {"type": "int", "low": 0, "high": 2})
    spec["resources"] = {"cpus": 1, "gpus": 1}
    with pytest.raises(tuner.SpecError, match=r"search_space.qat_epochs.*resources.gpus is 1"):
        tuner.StudySpec(**spec)
    spec["resources"] = {"cpus": 1, "gpus": 0}
    assert tuner.StudySpec(**spec).params["qat_epochs"].high == 2


def test_float8_is_for_gpu_trials_in_the_torch_runtime(tiny_spec: Any) -> None:
    spec = _with(
        tiny_spec(),
        "search_space.quantize",
        {"type": "categorical", "choices": ["none", "int8", "float8"]},
    )
    with pytest.raises(
        tuner.SpecError,
        match=r"search_space.quantize': float8 runs on GPU trials.*resources.gpus is 0",
    ):
        tuner.StudySpec(**spec)
    spec["resources"] = {"cpus": 1, "gpus": 0.5}
    assert tuner.StudySpec(**spec).params["quantize"].choices == ("none", "int8", "float8")
    spec["measure"] = {"runtime": "onnxruntime"}
    with pytest.raises(tuner.SpecError, match=r"float8.*measure.runtime is onnxruntime"):
        tuner.StudySpec(**spec)


@pytest.mark.parametrize(
    ("section", "field_name"),
    [
        ({"budget": Budget(n_trials=0)}, "budget.n_trials"),
        ({"budget": Budget(max_epochs=-2)}, "budget.max_epochs"),
        ({"resources": Resources(cpus=0)}, "resources.cpus"),
        ({"measure": MeasureSpec(repeats=1)}, "measure.repeats"),
        ({"sampler": SamplerSpec(name="anneal")}, "sampler.name"),
    ],
)
def test_section_objects_are_checked_like_mappings(
    section: dict[str, Any], field_name: str
) -> None:
    # From Python, a section passed as its dataclass is validated before anything runs.
    with pytest.raises(SpecError, match=f"spec field '{field_name}'"):
        StudySpec(name="s", workload="digits-mlp", search_space={"lr": 0.1}, **section)


def test_reusing_a_trained_model_is_refused_where_several_are_trained(tiny_spec: Any) -> None:
    reuse = {"n_trials": 3, "max_epochs": 2, "compressions_per_training": 3}
    with pytest.raises(tuner.SpecError, match="compressions_per_training.*with cv"):
        tuner.load_spec(tiny_spec(budget=reuse, cv={"folds": 3}))
    with pytest.raises(tuner.SpecError, match="compressions_per_training.*workers_per_trial"):
        tuner.load_spec(tiny_spec(budget=reuse, resources={"workers_per_trial": 2}))
    with pytest.raises(tuner.SpecError, match="compressions_per_training.*sampler grid"):
        grid = {"lr": {"type": "categorical", "choices": [0.01, 0.1]}, "prune_threshold": 0.5}
        tuner.load_spec(tiny_spec(budget=reuse, sampler={"name": "grid"}, search_space=grid))
    spec = tuner.load_spec(tiny_spec(budget=reuse))
    assert spec.to_dict()["budget"]["compressions_per_training"] == 3
    assert tuner.load_spec(spec.to_dict()) == spec
    assert "compressions_per_training" not in tuner.load_spec(tiny_spec()).to_dict()["budget"]


def test_a_study_starts_at_the_center_unless_its_sampler_draws_at_random(tiny_spec: Any) -> None:
    def start(sampler: Any) -> str | None:
        return tuner.load_spec(tiny_spec(sampler=sampler)).sampler.start

    assert start({"name": "tpe"}) == start("gp") == start(SamplerSpec(name="nsga2")) == "center"
    assert start({"name": "random"}) == start(SamplerSpec(name="random")) == "sampled"
    assert start({"name": "tpe", "start": "sampled"}) == "sampled"
    assert start({"name": "random", "start": "center"}) == "center"
    grid = {"x": {"type": "categorical", "choices": [1, 2]}}
    spec = tuner.load_spec(tiny_spec(sampler=SamplerSpec(name="grid"), search_space=grid))
    assert spec.sampler.start == "sampled"
    assert tuner.load_spec(spec.to_dict()).sampler == spec.sampler


def test_measure_target_names_a_ray_resource_of_ones_own(tiny_spec: Any) -> None:
    spec = tuner.load_spec(tiny_spec(measure={"target": "edge-arm"}))
    assert spec.measure.target == "edge-arm"
    assert tuner.load_spec(spec.to_dict()) == spec
    assert "target" not in tuner.load_spec(tiny_spec()).to_dict()["measure"]
    for bad, says in (
        ("", "a non-empty string"),
        (3, "a non-empty string"),
        ("CPU", "one Ray keeps for itself"),
        ("node:10.0.0.1", "one Ray keeps for itself"),
        ("edge arm", "without spaces"),
    ):
        with pytest.raises(tuner.SpecError, match=f"measure.target.*got {bad!r}.*{says}"):
            tuner.load_spec(tiny_spec(measure={"target": bad}))
    # The torch runtime's model is made for the trial's GPU; the ONNX file runs anywhere.
    with pytest.raises(tuner.SpecError, match="measure.target.*resources.gpus > 0"):
        tuner.load_spec(tiny_spec(measure={"target": "edge"}, resources={"gpus": 1}))
    gpu = tuner.load_spec(
        tiny_spec(measure={"target": "edge", "runtime": "onnxruntime"}, resources={"gpus": 1})
    )
    assert gpu.measure.target == "edge"
