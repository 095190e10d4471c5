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
from cnnscope.stages import EVERY_JOB, MODEL_FILES, STAGES, Study, stage_table
from cnnscope.stepkit.schema import OnDevice, Threaded, schema

STEP_MODULES = sorted(p.stem for p in (REPO / "src/cnnscope/steps").glob("*.py") if p.stem != "__init__")


def test_every_step_module_is_declared_once_and_has_no_yaml_of_its_own():
    assert sorted(STAGES) == STEP_MODULES
    assert {p.name for p in (REPO / "config").glob("*.yaml")} == {"config.yaml", "step.yaml"}


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


def test_the_config_readme_names_no_stage_by_hand():
    """Which stages there are, which run on a GPU and what settings each has is ``cnnscope stages``'s
    to print: the study keys' table has one ``steps.<stage>`` row for them all."""
    text = (REPO / "config" / "README.md").read_text()
    assert re.findall(r"^\| `steps\.([^`]+)` \|", text, re.M) == ["<stage>"]
    for name in STAGES:
        assert f"steps.{name}`" not in text.replace("steps.extract.batch_size", "").replace(
            "steps.attribution.perturbation", ""
        ), name


def test_cnnscope_stages_prints_the_table_and_every_stages_settings(capsys):
    from cnnscope.cli import main

    assert main(["stages", "--settings"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(stage_table())
    for name in STAGES:
        assert f"\n{name} (study: steps.{name}.<key>): {STAGES[name].doc}\n" in out
    assert "  perturbation.rise.n_masks: int = 500  in [1, inf)\n" in out
    assert "  store_dtype: float16 | float32 = float16\n" in out


def test_the_study_schema_leaves_the_stage_names_to_the_declarations():
    steps = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())["properties"]["steps"]
    assert "properties" not in steps and steps["additionalProperties"] == {"type": "object"}


def test_an_unknown_stage_in_steps_is_one_line_with_a_suggestion():
    from cnnscope.stepkit.compose import check_study

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
    quiet = Study({**TINY, "net2vec": False, "formulas": False, "attribution": None})
    assert not quiet.jobs("net2vec") and not quiet.jobs("featurevis") and not quiet.jobs("lcam")
    assert not quiet.jobs("formulas") and not quiet.jobs("tcav")
    inputs = quiet.report_inputs()
    assert all(set(e["artifacts"]) == {"extract", "dissect"} for e in inputs["layers"])
    assert set(inputs["models"][0]["artifacts"]) == {"train", "cueconflict", "robustness"}
    assert {b["step"] for b in inputs["benchmarks"]} == {s for s, _ in quiet.all_jobs()}
    cc = TINY["cue_conflict"]
    assert not Study({**TINY, "cue_conflict": {**cc, "robustness": False}}).jobs("robustness")
    real = {**cc, "stimuli": "download", "classes": "imagenet"}
    assert not Study({**TINY, "cue_conflict": real}).jobs("robustness")  # the checkout has no originals
    given = Study({**TINY, "cue_conflict": {**real, "robustness_images": "/data/16class"}})
    (job,) = given.jobs("robustness")
    assert "images='/data/16class'" in given.job_items("robustness", job)


def test_the_sanity_check_reads_the_permuted_label_model_of_the_same_config():
    """Each model's sanity job reads the train artifact of the study's permuted-label model of the same
    model config and overrides (and gives that model its labels and own train settings); that model's
    own job, snapshots and models of another config read none."""
    (tiny,) = TINY["models"]
    twin = {**tiny, "name": "noise", "labels": "permuted", "training": {"n_train": 64}, "snapshots": [0]}
    other = {**tiny, "name": "wide", "overrides": {"width": 16}}
    study = Study({**TINY, "models": [tiny, twin, other]})
    (given,) = [i for i in STAGES["sanity"].inputs if i.setting == "random_labels"]
    wc = {"dataset": "synthworld"}
    assert study.source(given, {**wc, "model": "tiny"}) == study.artifact("train", model="noise")
    for name in ("noise", "noise@0", "wide"):
        assert study.source(given, {**wc, "model": name}) is None
    items = study.job_items("train", {"model": "noise"})
    assert {"train.labels='permuted'", "train.n_train=64"} <= set(items)
    assert "train.n_train=120" in items  # the study's, for every model; the model's own wins:
    assert items.index("train.n_train=64") > items.index("train.n_train=120")
    assert not any("labels" in i for i in study.job_items("train", {"model": "tiny"}))


def test_the_readme_stage_table_is_the_declarations():
    """README's table of stages is :func:`stage_table` (``cnnscope stages`` prints it): a row per
    stage, its artifact path pattern and whether it may run on a GPU."""
    assert stage_table() in (REPO / "README.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| .* \| `([^`]*)` \| (yes|) \|$", stage_table(), re.M)
    assert [name for name, _, _ in rows] == list(STAGES)
    for name, path, gpu in rows:
        assert re.findall(r"<(\w+)>", path) == list(STAGES[name].wildcards), name
        assert path.startswith("data/" if STAGES[name].root == "data" else f"results/{name}/"), name
        assert (gpu == "yes") == STAGES[name].device, name


def test_artifact_file_names_are_spelled_only_in_their_accessors():
    """Every file of a stage's artifact is named once, in :mod:`cnnscope.artifacts`; its writer and its
    readers reach it through the accessor (the packed probe set's files: :mod:`cnnscope.data.packed`)."""
    names = re.findall(r'_file\("([^"]+)"', (REPO / "src/cnnscope/artifacts.py").read_text())
    names += re.findall(r'self\.path / f"([^{"]+)\{', (REPO / "src/cnnscope/artifacts.py").read_text())
    assert {"activations.npy", "thresholds.npy", "units.csv", "maps.npz", "attention_"} <= set(names)
    for path in (REPO / "src").rglob("*.py"):
        if (
            path.name == "artifacts.py"
            or path.relative_to(REPO / "src").as_posix() == "cnnscope/data/packed.py"
        ):
            continue
        text = path.read_text()
        for name in names:
            assert f'"{name}' not in text and f"'{name}" not in text, (path.name, name)
