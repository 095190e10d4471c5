"""The workflow's plan of a study is kept on disk under the identity of what it derives from: a parse
that changed nothing imports no torch or Hydra, and any edit builds (and checks) it again."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import yaml
from conftest import TINY, copy_repo, planned_jobs, snakemake

from cnnscope import plan


def _key(tmp_path: Path, config: dict | None = None, named: tuple[str, ...] = ()) -> str:
    return plan.key(config or TINY, tmp_path / "code", tmp_path / "config", named)


def test_the_key_follows_the_config_each_file_and_named_paths(tmp_path):
    for folder, name in (("code", "a.py"), ("config", "a.yaml")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / name).write_text("x = 1\n")
    first = _key(tmp_path)
    assert _key(tmp_path) == first
    assert _key(tmp_path, {**TINY, "net2vec": False}) != first
    code = tmp_path / "code" / "a.py"
    stamp = code.stat().st_mtime_ns
    code.write_text("x = 2\n")  # same size: the modification time tells
    os.utime(code, ns=(stamp + 10**9, stamp + 10**9))
    second = _key(tmp_path)
    assert second != first
    (tmp_path / "config" / "b.yaml").write_text("{}\n")
    assert _key(tmp_path) != second
    ckpt = tmp_path / "model.pt"
    absent = _key(tmp_path, named=(str(ckpt),))
    ckpt.write_bytes(b"weights")
    assert _key(tmp_path, named=(str(ckpt),)) != absent


def test_a_plan_is_built_once_kept_alone_and_rebuilt_when_unreadable(tmp_path):
    builds = []

    def build() -> dict:
        builds.append(1)
        return {"n": len(builds)}

    assert plan.cached(tmp_path, "k1", build) == {"n": 1}
    assert plan.cached(tmp_path, "k1", build) == {"n": 1} and len(builds) == 1
    assert plan.cached(tmp_path, "k2", build) == {"n": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["plan-k2.json"]  # the earlier key's plan is gone
    (tmp_path / "plan-k2.json").write_text('{"n": ')  # cut short
    assert plan.cached(tmp_path, "k2", build) == {"n": 3}


def test_a_plan_that_cannot_be_kept_is_used_all_the_same(tmp_path):
    target = tmp_path / "file"
    target.write_text("not a folder")
    assert plan.cached(target, "k", lambda: {"ok": True}) == {"ok": True}


def _imports(work: Path) -> set[str]:
    """Top-level modules a dry run of the study in ``work`` imports."""
    res = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "snakemake", "-n", "--cores", "1"],
        cwd=work,
        env={**os.environ, "PYTHONPATH": str(work / "src")},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    return {
        line.split("|")[-1].strip() for line in res.stderr.splitlines() if line.startswith("import time:")
    }


def test_a_parse_that_changed_nothing_imports_no_torch_and_an_edit_checks_again(tmp_path):
    work = copy_repo(tmp_path)
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(TINY, sort_keys=False))
    assert {"torch", "hydra"} <= _imports(work)  # the first parse builds the plan and checks the study
    assert not {"torch", "hydra", "omegaconf"} & _imports(work)
    # a bad default in a step's schema is a new plan, checked before any job
    step = work / "src" / "cnnscope" / "steps" / "dissect.py"
    good = step.read_text()
    assert "detector_iou: float = bounded(0.04," in good
    time.sleep(0.01)
    step.write_text(good.replace("detector_iou: float = bounded(0.04,", "detector_iou: float = bounded(2.0,"))
    res = snakemake(work, "-n")
    assert res.returncode != 0 and "detector_iou=2.0 is out of range" in res.stdout + res.stderr
    step.write_text(good)
    assert planned_jobs(snakemake(work, "-n"))["dissect"] == 2
