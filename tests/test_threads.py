"""CPU steps use the cores they are given; training keeps one thread, because its bytes depend on it."""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import copy_repo, snakemake

from cnnscope.stages import STAGES
from cnnscope.training import TrainSpec, train


def _trained_digest(threads: int) -> str:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        spec = TrainSpec(
            arch="convnet", width=8, steps=12, n_train=64, n_val=16, image_size=32, regime="shape"
        )
        model, _ = train(spec, progress=False)
    finally:
        torch.set_num_threads(before)
    h = hashlib.sha256()
    for _, t in sorted(model.state_dict().items()):
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def test_trained_weights_depend_on_the_thread_count():
    """Why the train step alone keeps one thread (and records it in what a resumed run must match)."""
    one = _trained_digest(1)
    assert _trained_digest(1) == one  # deterministic for a thread count ...
    assert _trained_digest(2) != one  # ... but another count sums the gradients in another order
    assert STAGES["train"].threads == "one"
    assert STAGES["net2vec"].threads == "one"  # the same holds for its learned embeddings ...
    assert STAGES["lcam"].threads == "one"  # ... and for the L-CAM attention
    assert STAGES["decoder"].threads == "one"  # ... and for the learned inversion's decoder
    threaded = ("extract", "dissect", "attribution", "cueconflict", "featurevis", "prepare")
    assert all(STAGES[s].threads == "all" for s in threaded)


def _threads(res) -> dict[str, set[int]]:
    found: dict[str, set[int]] = {}
    for step, n in re.findall(r"cnnscope\.steps\.(\w+) .*?threads=(\d+)", res.stdout + res.stderr):
        found.setdefault(step, set()).add(int(n))
    return found


def _priorities(res) -> dict[str, int]:
    """The train jobs' priorities from a dry run's job listing (model -> priority)."""
    found = {}
    for block in re.split(r"\n(?=\[)", res.stdout + res.stderr):  # each job's listing starts "[<date>]"
        rule = re.search(r"rule train:", block)
        model, priority = re.search(r"wildcards: model=(\S+)", block), re.search(r"priority: (\d+)", block)
        if rule and model:
            found[model.group(1)] = int(priority.group(1)) if priority else 0
    return found


@pytest.fixture(scope="module")
def default_study(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """A copy of the repository, and its default study's dry run of every job with its command line
    on two cores (one parse of the whole study serves both tests below)."""
    work = copy_repo(tmp_path_factory.mktemp("default"))
    return work, snakemake(work, "-n", "-p", "--forceall", "--cores", "2")


def test_cpu_steps_get_every_core_of_the_run_or_of_their_cluster_job(default_study):
    work, planned = default_study
    study = work / "config" / "config.yaml"
    default = _threads(planned)
    assert default["train"] == {1}
    for step in ("prepare", "extract", "dissect", "attribution", "cueconflict", "featurevis"):
        assert default[step] == {1}, (step, default)  # the default study's job_threads: 1
    study.write_text(study.read_text().replace("job_threads: 1", "job_threads: 3"))
    local = _threads(snakemake(work, "-n", "-p", "--forceall", "--cores", "2"))
    assert local["train"] == {1}
    for step in ("prepare", "extract", "dissect", "attribution", "cueconflict", "featurevis"):
        assert local[step] == {2}, (step, local)  # never more than the run's cores
    cluster = _threads(snakemake(work, "-n", "-p", "--forceall", "--default-resources", "cpus_per_task=3"))
    assert cluster["train"] == {1} and cluster["extract"] == {3} and cluster["dissect"] == {3}
    # a cluster job on a bigger node still uses only what it was given
    given = _threads(
        snakemake(work, "-n", "-p", "--forceall", "--cores", "8", "--default-resources", "cpus_per_task=1")
    )
    assert given["extract"] == {1} and given["attribution"] == {1}


def test_models_most_of_the_study_waits_for_train_first(default_study):
    """Two cores, three models: the permuted-label control (a few jobs) trains last, beside the
    downstream jobs of the two models the rest of the study needs."""
    found = _priorities(default_study[1])
    assert set(found) == {"standard", "shape", "permuted"}, found
    assert found["permuted"] < min(found["standard"], found["shape"]), found
