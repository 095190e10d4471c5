"""Shared fixtures: a small synthetic world on disk and its packed form, and a tiny study run to its
report in a copy of the repository (with helpers to run Snakemake there)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cnnscope.data.broden import BrodenDataset
from cnnscope.data.packed import PackedDataset, pack
from cnnscope.data.synthworld import WorldSpec, generate
from cnnscope.io import seal

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

# The files whose tests run studies, the longest first (pytest's --durations on one worker): run before
# the rest, so that the suite's workers (pyproject's addopts: whole files each) do not end on one of them.
LONG_FIRST = (
    "test_slurm.py",
    "test_workflow.py",
    "test_training_dynamics.py",
    "test_shapetexture.py",
    "test_faults.py",
    "test_guards.py",
    "test_adding_a_stage.py",
    "test_sources.py",
    "test_adoption.py",
    "test_threads.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Put the files of :data:`LONG_FIRST` first, in its order (the rest keep theirs)."""
    gone = [name for name in LONG_FIRST if not (REPO / "tests" / name).is_file()]
    if gone:
        raise pytest.UsageError(f"conftest.LONG_FIRST names no such test file: {', '.join(gone)}")
    rank = {name: i for i, name in enumerate(LONG_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("world") / "synthworld"
    generate(root, WorldSpec(n_images=60, image_size=32, seed=3), progress=False)
    return root


@pytest.fixture(scope="session")
def packed(world, tmp_path_factory) -> PackedDataset:
    out = tmp_path_factory.mktemp("packed")
    pack(BrodenDataset(world), out, progress=False)
    seal(out)  # as the prepare step does, so steps accept it
    return PackedDataset.open(out)


TINY = {
    "dataset": "synthworld",
    "data_dir": "data",
    "gpu": False,
    "job_threads": 1,
    "models": [
        {
            "name": "tiny",
            "model": "convnet",
            "train": True,
            "regime": "shape",
            "layers": ["conv2", "conv5"],
            "overrides": {"width": 8},
        }
    ],
    "cue_conflict": {"stimuli": "world", "classes": "world", "references": []},
    "attribution": {"featurevis": True},
    "steps": {
        "synthworld": {"world.n_images": 40, "world.image_size": 32},
        "train": {"train.steps": 20, "train.n_train": 120, "train.n_val": 60, "train.image_size": 32},
        "dissect": {"quantile": 0.005},
        "net2vec": {"segmentation.epochs": 1, "classification.steps": 20},
        "stimuli": {"world.size": 32, "world.poses": 1, "world.singles": 1, "world.textures": 1},
        "attribution": {
            "images": 2,
            "metric_images": 4,
            "deletion_steps": 4,
            "perturbation.rise.n_masks": 64,
        },
        "featurevis": {"units": 1, "steps": 4, "size": 32, "inversion_steps": 5},
        "decoder": {
            "images": 24,
            "held_out": 8,
            "decoder.steps": 10,
            "decoder.batch_size": 8,
            "dgn_steps": 4,
        },
        "lcam": {"lcam.steps": 6, "lcam.batch_size": 8, "world_images": 32, "image_size": 32},
        "mistakes": {"images": 32, "image_size": 32, "batch_size": 16, "show": 2},
        "tcav": {"concept_images": 6, "class_images": 2, "tcav.randoms": 3},
        "report": {"top_units": 2, "top_images": 2},
    },
}

# The tiny study cut to its chain of world, training, extraction, dissection, cue conflict and report (no
# attribution, Net2Vec, formulas or distortions): for the tests of the workflow's machinery (a kill, a
# cluster), whose outcome does not depend on which stages run.
CORE = {k: v for k, v in TINY.items() if k != "attribution"} | {
    "cue_conflict": {**TINY["cue_conflict"], "robustness": False},
    "net2vec": False,
    "formulas": False,
}


def copy_repo(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for item in ("Snakefile", "workflow", "config", "src"):
        src = REPO / item
        if src.is_dir():
            shutil.copytree(src, dest / item, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / item)
    return dest


def snakemake(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(cwd / "src")}
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "--profile", "workflow/profiles/default", "--cores", "2", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def planned_jobs(res: subprocess.CompletedProcess) -> dict[str, int]:
    """Rule -> count from the dry run's "Job stats" table."""
    assert res.returncode == 0, res.stdout + res.stderr
    text = res.stdout + res.stderr
    if "Nothing to be done" in text:
        return {}
    table = text.split("Job stats:")[1]
    return {
        m.group(1): int(m.group(2))
        for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)
        if m.group(1) != "total"
    }


@pytest.fixture(scope="session")
def study(tmp_path_factory) -> Path:
    """The tiny study run to its report, in a copy of the repository whose own code it runs."""
    repo = copy_repo(tmp_path_factory.mktemp("study"))
    (repo / "config" / "config.yaml").write_text(yaml.safe_dump(TINY, sort_keys=False))
    res = snakemake(repo)
    assert res.returncode == 0, res.stdout + res.stderr
    return repo


def study_plan(config: dict | Path) -> dict[str, int]:
    """Rule -> count of a whole study's jobs as its stage declarations derive them (``report`` and
    ``all`` included), with each model composed as the workflow composes it to know whether its
    weights are fetched: what a dry run of a fresh study must plan."""
    from cnnscope.models.registry import needs_download
    from cnnscope.stages import Study
    from cnnscope.stepkit.compose import study_model_spec

    if isinstance(config, Path):
        config = yaml.safe_load(config.read_text())
    probe = Study(config)
    study = Study(config, lambda name: needs_download(study_model_spec(probe, name)))
    plan: dict[str, int] = {}
    for stage, _ in study.all_jobs():
        plan[stage] = plan.get(stage, 0) + 1
    return {**plan, "report": 1, "all": 1}


def downstream(study: dict, *stages: str) -> dict[str, int]:
    """Rule -> count of the jobs that rerun when every job of ``stages`` must: theirs, those of every
    stage that reads them (the stage declarations' inputs; model files are the train stage's artifact,
    the models being trained in the pipeline), and the report."""
    from cnnscope.stages import EVERY_JOB, MODEL_FILES, STAGES, Study

    jobs = {s: len(Study(study).jobs(s)) for s in STAGES}
    rerun, todo = set(), list(stages)
    while todo:
        s = todo.pop()
        if s in rerun or not jobs[s]:
            continue
        rerun.add(s)
        todo += [
            reader.name
            for reader in STAGES.values()
            for given in reader.inputs
            if s in given.stages
            or (s == "train" and MODEL_FILES in given.stages)
            or EVERY_JOB in given.stages
        ]
    return {s: jobs[s] for s in rerun} | {"all": 1}
