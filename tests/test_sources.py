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
from conftest import REPO, TINY, downstream, planned_jobs, snakemake

from cnnscope.sources import closure
from cnnscope.stages import STAGES
from cnnscope.stepkit.warm import PRELOAD

STEPS = list(STAGES)
# Steps that fetch from the network, which the tiny study has no job of.
FETCHING = {"download", "weights"}


def _imported(src: Path) -> dict[str, set[Path]]:
    """Per step, the cnnscope files (relative to ``src``) an interpreter has loaded after importing the
    step's module: one interpreter imports the heavy libraries (the warm start's :data:`PRELOAD`; no
    module of cnnscope) and forks a child per step, which imports the step and reports."""
    code = """
import importlib, json, os, sys
for name in sys.argv[1].split(","):
    importlib.import_module(name)
found = {}
for step in sys.argv[2:]:
    r, w = os.pipe()
    if os.fork() == 0:
        status = 1
        try:
            os.close(r)
            importlib.import_module(f"cnnscope.steps.{step}")
            mods = [m for n, m in sys.modules.items() if n.split(".")[0] == "cnnscope"]
            os.write(w, json.dumps(sorted(m.__file__ for m in mods if getattr(m, "__file__", None))).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(w)
    with os.fdopen(r) as pipe:
        found[step] = json.loads(pipe.read())
    assert os.wait()[1] == 0, step
print(json.dumps(found))
"""
    env = {**os.environ, "PYTHONPATH": str(src)}
    res = subprocess.run(
        [sys.executable, "-c", code, ",".join(PRELOAD), *STEPS],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout)
    return {s: {Path(f).resolve().relative_to(src.resolve()) for f in out[s]} for s in STEPS}


@pytest.fixture(scope="module")
def imports() -> dict[str, set[Path]]:
    return _imported(REPO / "src")


@pytest.mark.parametrize("step", STEPS)
def test_the_static_closure_is_what_the_step_imports(step, imports):
    src = (REPO / "src").resolve()
    assert {p.relative_to(src) for p in closure(f"cnnscope.steps.{step}")} == imports[step]


def _rule_inputs(study: Path) -> dict[str, set[Path]]:
    """Each rule's code inputs (relative to the study's ``src``), from a dry run that plans every job."""
    res = snakemake(study, "-n", "--forceall")
    assert res.returncode == 0, res.stdout + res.stderr
    inputs: dict[str, set[Path]] = {}
    src = (study / "src").resolve()
    for rule, files in re.findall(r"^rule (\w+):\n    input: (.*)$", res.stdout + res.stderr, re.M):
        code = {(study / f).resolve().relative_to(src) for f in files.split(", ") if f.endswith(".py")}
        inputs.setdefault(rule, set()).update(code)
    return inputs


def test_every_rule_has_exactly_its_steps_imports_as_inputs(study, imports):
    """The study runs its own copy of the code (PYTHONPATH), and its rules list that copy's files."""
    inputs = _rule_inputs(study)
    assert inputs.keys() - {"all"} == set(STEPS) - FETCHING
    for step in inputs.keys() - {"all"}:
        assert inputs[step] == imports[step], step


# Steps whose own module the edit test changes: the DAG's root (every job downstream reruns), a middle
# step (its per-layer jobs and their readers) and the leaf. The test above shows every other step's
# module is an input of exactly that step's rule; each dry run costs about 7 s.
EDITED_STEPS = ("synthworld", "dissect", "report")


def _edits(imports: dict[str, set[Path]]) -> dict[Path, frozenset[str]]:
    """Modules to edit, with the steps that import them: the :data:`EDITED_STEPS`' own modules (only
    that step imports each) and the modules shared by the most and by the fewest (but two) steps."""
    importers = {
        f: frozenset(s for s in STEPS if s not in FETCHING and f in imports[s])
        for f in set().union(*imports.values())
    }
    shared = sorted(
        (f for f, s in importers.items() if len(s) >= 2), key=lambda f: (len(importers[f]), str(f))
    )
    own = [Path(f"cnnscope/steps/{s}.py") for s in EDITED_STEPS]
    assert all(importers[f] == {f.stem} for f in own)
    return {f: importers[f] for f in [*own, shared[0], shared[-1]]}


def test_editing_a_module_reruns_exactly_the_steps_that_import_it(study, imports):
    """Three steps' own modules and two shared ones (the test above shows every module is an input of
    exactly the rules whose steps import it, so these cover how Snakemake acts on such an input)."""
    for module, steps in _edits(imports).items():
        edited = study / "src" / module
        original = edited.read_text()
        try:
            edited.write_text(original + "\n# an edit\n")
            jobs = planned_jobs(snakemake(study, "-n"))
        finally:
            edited.write_text(original)
        assert jobs == downstream(TINY, *steps), (module, sorted(steps))
