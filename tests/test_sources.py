"""Reruns follow the code: each rule's code inputs are exactly the cnnscope modules its step imports,
and editing a module reruns exactly the steps that import it (and what reads their results)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, planned_jobs, snakemake

from cnnscope.sources import closure

STEPS = [p.stem for p in (REPO / "src/cnnscope/steps").glob("*.py")]
STEPS = [s for s in STEPS if s not in ("__init__", "runner", "schema", "compose")]
# What reads each step's artifact in the tiny study (the report reads every job's).
READERS = {
    "synthworld": ["prepare"],
    "prepare": ["extract", "dissect", "attribution"],
    "train": ["extract", "cueconflict", "attribution", "featurevis"],
    "extract": ["dissect"],
    "dissect": ["featurevis"],
    "stimuli": ["cueconflict"],
}
# Jobs of each rule in the tiny study (test_workflow.TINY: one model, two layers).
JOBS = {s: 1 for s in STEPS if s != "download"} | {"extract": 2, "dissect": 2, "featurevis": 2}


def _imported(step: str, src: Path) -> set[Path]:
    """The cnnscope source files a fresh interpreter has loaded after importing the step module."""
    code = (
        f"import sys, json; import cnnscope.steps.{step}; "
        "print(json.dumps(sorted(m.__file__ for n, m in sys.modules.items() "
        "if n.split('.')[0] == 'cnnscope' and getattr(m, '__file__', None))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(src)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {Path(p).resolve() for p in json.loads(out)}


@pytest.fixture(scope="module")
def imports() -> dict[str, set[Path]]:
    return {s: _imported(s, REPO / "src") for s in STEPS}


@pytest.mark.parametrize("step", STEPS)
def test_the_static_closure_is_what_the_step_imports(step, imports):
    assert set(closure(f"cnnscope.steps.{step}")) == imports[step]


def _rule_inputs(study: Path) -> dict[str, set[Path]]:
    """Each rule's code inputs, from a dry run that plans every job."""
    res = snakemake(study, "-n", "--forceall")
    assert res.returncode == 0, res.stdout + res.stderr
    inputs: dict[str, set[Path]] = {}
    for rule, files in re.findall(r"^rule (\w+):\n    input: (.*)$", res.stdout + res.stderr, re.M):
        code = {(study / f).resolve() for f in files.split(", ") if f.endswith(".py")}
        inputs.setdefault(rule, set()).update(code)
    return inputs


def test_every_rule_has_exactly_its_steps_imports_as_inputs(study):
    src = study / "src"
    inputs = _rule_inputs(study)
    for step in inputs.keys() - {"all"}:
        assert inputs[step] == _imported(step, src), step


def _expected(importers: set[str]) -> dict[str, int]:
    todo, rerun = list(importers), set()
    while todo:
        s = todo.pop()
        if s not in rerun:
            rerun.add(s)
            todo.extend(READERS.get(s, []))
    rerun |= {"report", "all"}
    return {s: JOBS.get(s, 1) for s in rerun}


def _groups(imports: dict[str, set[Path]]) -> dict[frozenset[str], Path]:
    """One module for each distinct set of steps that import a module."""
    groups: dict[frozenset[str], Path] = {}
    for f in sorted(set().union(*imports.values())):
        steps = frozenset(s for s in STEPS if s != "download" and f in imports[s])
        if steps:  # modules of the download step alone: it has no job in the tiny study
            groups.setdefault(steps, f)
    return groups


def test_editing_a_module_reruns_exactly_the_steps_that_import_it(study, imports):
    """One edited module for each distinct set of importing steps (the test above shows every module
    is an input of exactly the rules whose steps import it)."""
    groups = _groups(imports)
    assert len(groups) >= 6  # the closures really differ between steps
    for steps, module in groups.items():
        edited = study / "src" / module.relative_to(REPO / "src")
        original = edited.read_text()
        try:
            edited.write_text(original + "\n# an edit\n")
            jobs = planned_jobs(snakemake(study, "-n"))
        finally:
            edited.write_text(original)
        assert jobs == _expected(set(steps)), (module, sorted(steps))
