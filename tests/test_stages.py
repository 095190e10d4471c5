"""The stage declarations (cnnscope.stages) are the one source of the workflow's wiring: each agrees with
its step's schema, and every document that lists stages lists exactly the declared ones."""

from __future__ import annotations

import importlib
import re
import typing

import pytest
import yaml
from conftest import REPO, TINY

from cnnscope.errors import CnnscopeError
from cnnscope.stages import EVERY_JOB, MODEL_FILES, STAGES, Study
from cnnscope.steps.schema import OnDevice, Threaded, schema

STEP_MODULES = sorted(
    p.stem
    for p in (REPO / "src/cnnscope/steps").glob("*.py")
    if p.stem not in ("__init__", "runner", "schema", "compose")
)


def test_every_step_module_is_declared_once_with_its_config():
    assert sorted(STAGES) == STEP_MODULES
    for name in STAGES:
        assert (REPO / "config" / f"{name}.yaml").is_file(), name


@pytest.mark.parametrize("name", list(STAGES))
def test_a_declaration_agrees_with_its_steps_schema(name):
    stage, config = STAGES[name], schema(name)
    hints = typing.get_type_hints(config)
    assert (stage.threads is not None) == issubclass(config, Threaded), (
        "threads: the step has a threads setting"
    )
    assert stage.device == issubclass(config, OnDevice), "device: the step has a device setting"
    assert stage.loads_model == ("model" in hints), "loads_model: the step has a model setting"
    # every stage that loads the job's model reads its model files, but those that make them
    makers = ("train", "weights")
    assert (MODEL_FILES in {i.stages[0] for i in stage.inputs}) == (stage.loads_model and name not in makers)
    for given in stage.inputs:
        assert given.setting is None or given.setting in hints, (name, given)
        for source in given.stages:
            assert source in STAGES or source in (MODEL_FILES, EVERY_JOB), (name, source)
    importlib.import_module(f"cnnscope.steps.{name}")


def test_the_config_readme_lists_each_stage_and_the_device_stages():
    text = (REPO / "config" / "README.md").read_text()
    assert re.findall(r"^\| `steps\.(\w+)` \|", text, re.M) == list(STAGES)
    gpu = re.search(r"^\| `gpu` \|.*\((.*)\) as GPU jobs", text, re.M)
    assert gpu, "the gpu row names the device stages"
    assert gpu.group(1).split(", ") == [s.name for s in STAGES.values() if s.device]


def test_the_study_schema_leaves_the_stage_names_to_the_declarations():
    steps = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())["properties"]["steps"]
    assert "properties" not in steps and steps["additionalProperties"] == {"type": "object"}


def test_an_unknown_stage_in_steps_is_one_line_with_a_suggestion():
    from cnnscope.steps.compose import check_study

    study = Study({**TINY, "steps": {"dissekt": {"quantile": 0.01}}})
    with pytest.raises(CnnscopeError, match=r"steps\.dissekt: no such stage; did you mean dissect\?"):
        check_study(study, lambda *a: pytest.fail("composed"), lambda n: pytest.fail("model"))


def test_jobs_follow_the_study():
    """The tiny study (one trained model, two layers) has one job of each stage it runs, per layer for
    the per-layer ones; turning a stage off removes its jobs and the report's input of it."""
    study = Study(TINY)
    layers = len(TINY["models"][0]["layers"])
    counts = {s: len(study.jobs(s)) for s in STAGES}
    assert counts == {
        s.name: 0 if s.name in ("download", "weights") else layers if s.per_layer else 1
        for s in STAGES.values()
    }
    quiet = Study({**TINY, "net2vec": False, "attribution": None})
    assert not quiet.jobs("net2vec") and not quiet.jobs("featurevis") and not quiet.jobs("lcam")
    inputs = quiet.report_inputs()
    assert all(set(e["artifacts"]) == {"extract", "dissect"} for e in inputs["layers"])
    assert set(inputs["models"][0]["artifacts"]) == {"train", "cueconflict"}
    assert {b["step"] for b in inputs["benchmarks"]} == {s for s, _ in quiet.all_jobs()}


def test_the_readme_stage_table_lists_each_stage_with_its_artifact_folder():
    text = (REPO / "README.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| .* \| `([^`]*)` \|$", text, re.M)
    assert [name for name, _ in rows] == list(STAGES)
    study = Study({"dataset": "d", "data_dir": "data", "models": []})
    for name, path in rows:
        root = study.artifact(name, **{w: "" for w in STAGES[name].wildcards}).rstrip("/")
        assert path.startswith(root.split("/")[0] + "/" + (name if STAGES[name].root == "results" else "")), (
            name
        )
