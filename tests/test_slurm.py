"""A study through Snakemake's SLURM executor, on a real single-node SLURM cluster with accounting
(``tests/slurm/cluster.sh start``, which ``.ci/run`` runs as root before the tests): the local rules run
on the submit host, every other job through sbatch.

The study is the tiny test study cut to its core chain (``conftest.CORE``): a job of each kind a
stage declares, its own threads (the world), every core of its cluster job (packing, extraction,
dissection, cue conflict), one thread (training), and the local rules (the stimuli, the report). The
executor is under test here, not the science (every stage's rule comes from one declaration loop, and
the tiny study runs them all locally); each job costs about 15 s of start-up on the 2-core test node.
Training keeps 200 steps, enough that a progress bar in its log would show.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml
from conftest import CORE, TINY, copy_repo

from cnnscope.stages import STAGES, Study


def _sacct_jobs() -> list[str]:
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-S", "now-1days", "-o", "JobID,State"],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return [line for line in out.splitlines() if line]


def _cluster_up() -> bool:
    if not shutil.which("sinfo"):
        return False
    res = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=60)
    return res.returncode == 0 and any(s in res.stdout for s in ("idle", "mix", "alloc"))


def planned_jobs(work) -> int:
    """How many jobs a dry run of the study plans (``all`` included)."""
    out = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--quiet", "rules"],
        cwd=work,
        env={**os.environ, "PYTHONPATH": str(work / "src")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    totals = [line.split()[1] for line in (out.stdout + out.stderr).splitlines() if line.startswith("total ")]
    return int(totals[0])


def test_a_study_runs_through_the_slurm_executor(tmp_path):
    if not _cluster_up():
        if os.environ.get("CI"):
            pytest.fail("no SLURM cluster: .ci/run starts one with tests/slurm/cluster.sh start")
        pytest.skip("no SLURM cluster here (as root: bash tests/slurm/cluster.sh start)")
    work = copy_repo(tmp_path / "repo")
    steps = {**TINY["steps"], "train": {**TINY["steps"]["train"], "train.steps": 200}}
    models = [{**TINY["models"][0], "layers": ["conv5"]}]
    config = {**CORE, "models": models, "steps": steps}
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    planned = planned_jobs(work)
    study = Study(config)
    kinds = {STAGES[s].threads for s in STAGES if study.jobs(s)}
    assert planned == 9 and kinds == {None, "all", "one"}  # 8 stages, a job each, and "all"
    before = set(_sacct_jobs())
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--profile",
            "workflow/profiles/slurm",
            # a 2-core test node: small requests, and quick status polling
            "--default-resources",
            "slurm_partition=debug",
            "mem_mb=1000",
            "runtime=10",
            "cpus_per_task=1",
            "--set-resources",
            "extract:mem_mb=1000",
            "dissect:mem_mb=1000",
            "train:mem_mb=1000",
            "--slurm-init-seconds-before-status-checks",
            "2",
            "--seconds-between-status-checks",
            "2",
            "--latency-wait",
            "10",
        ],
        cwd=work,
        env={**os.environ, "PYTHONPATH": str(work / "src")},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert (work / "results" / "report" / "index.html").is_file()
    log = res.stdout + res.stderr
    # its local rules: those declared local that it has jobs of
    local = {s.name for s in STAGES.values() if s.local and study.jobs(s.name)}
    assert local == {"stimuli", "report"}
    assert {r for r in re.findall(r"^localrule (\w+):", log, re.M)} == local | {"all"}, log[-3000:]
    submitted = re.findall(r"^rule (\w+):", log, re.M)
    assert submitted and not local & set(submitted)
    new = [j for j in _sacct_jobs() if j not in before]
    assert len(new) == planned - 1 - len(local), new  # every other job of the DAG went through sbatch
    assert all(j.endswith("|COMPLETED") for j in new), new
    train_logs = list((work / "results" / "logs" / "train").glob("*.log"))
    assert len(train_logs) == 1  # 200 training steps: progress in a few lines, not a line a step
    assert all(f.stat().st_size < 10_000 for f in train_logs), [f.stat().st_size for f in train_logs]
