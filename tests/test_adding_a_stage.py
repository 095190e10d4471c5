"""README "Adding a stage", followed in a copy of the finished tiny study: a toy per-layer stage (each
unit's mean activation) is its library module, its step module, one declaration and its report
section: the default study plans it for every layer, and the tiny study runs it and its report shows
it, rerunning nothing else."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, TINY, planned_jobs, snakemake

LIBRARY = '''"""Each unit's mean activation over the probe set (a toy stage)."""

import numpy as np


def unit_means(activations: np.ndarray) -> np.ndarray:
    """``(N, C, H, W)`` activations -> ``(C,)`` means, in float64."""
    return activations.astype(np.float64).mean(axis=(0, 2, 3))
'''

STEP = '''"""Step ``unitmeans``: each unit's mean activation of one extracted layer."""

from dataclasses import dataclass
import numpy as np
import pandas as pd
from omegaconf import MISSING

from cnnscope.artifacts import ExtractArtifact
from cnnscope.stepkit.runner import Output, run_step
from cnnscope.stepkit.schema import Step, register
from cnnscope.unitmeans import unit_means


@dataclass
class Config(Step):
    activations: str = MISSING


register("unitmeans", Config)


def body(cfg: Config) -> None:
    out = Output(cfg)
    out.verify(activations="extract")
    means = unit_means(np.load(ExtractArtifact(cfg.activations).activations, mmap_mode="r"))
    with out.write() as tmp:
        pd.DataFrame({"unit": range(len(means)), "mean": means}).to_csv(tmp / "means.csv", index=False)
    out.done("%d units", len(means))


if __name__ == "__main__":
    run_step("unitmeans", body)
'''

SECTION = '''"""The report's section of the unitmeans stage: each layer's mean unit activation."""

import pandas as pd

from cnnscope.report.sections import Section, register


def draw(page, entries) -> None:
    rows = [
        {"model": e.model, "layer": e.layer, "mean": pd.read_csv(e.artifact / "means.csv")["mean"].mean()}
        for e in entries
    ]
    page.table(pd.DataFrame(rows), "unit_means")


register(Section("unitmeans", "Unit means", draw))
'''

DECLARATION = """
STAGES["unitmeans"] = Stage(
    "unitmeans",
    "Each unit's mean activation of an extracted layer.",
    _LAYER,
    _layers(),
    inputs=(_in("extract", setting="activations"),),
    report=True,
)
"""


def test_a_toy_per_layer_stage_takes_its_modules_and_one_declaration(study, tmp_path):
    work = tmp_path / "study"
    shutil.copytree(study, work, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    src = work / "src" / "cnnscope"
    (src / "unitmeans.py").write_text(LIBRARY)
    (src / "steps" / "unitmeans.py").write_text(STEP)
    (src / "report" / "sections" / "unitmeans.py").write_text(SECTION)
    with (src / "stages.py").open("a") as f:
        f.write(DECLARATION)

    # the default study's jobs, as the copy's declarations derive them (the workflow makes its rules from
    # them: the tiny study's dry run below plans the new stage's)
    count = "from cnnscope.stages import Study; import sys, yaml"
    count += "; s = Study(yaml.safe_load(open(sys.argv[1])))"
    count += "; print(len(s.jobs('unitmeans')), len(s.jobs('net2vec')))"
    default = subprocess.run(
        [sys.executable, "-c", count, str(REPO / "config" / "config.yaml")],
        env={**os.environ, "PYTHONPATH": str(work / "src")},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    models = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["models"]
    # one job per model's layer, like Net2Vec (dissect also has the snapshots' layers)
    assert int(default[0]) == sum(len(m["layers"]) for m in models) == int(default[1])

    assert planned_jobs(snakemake(work, "-n")) == {"unitmeans": 2, "report": 1, "all": 1}
    res = snakemake(work)
    assert res.returncode == 0, res.stdout + res.stderr
    model = TINY["models"][0]["name"]
    for layer in TINY["models"][0]["layers"]:
        made = work / "results" / "unitmeans" / "synthworld" / model / layer
        acts = np.load(work / "results" / "extract" / "synthworld" / model / layer / "activations.npy")
        means = pd.read_csv(made / "means.csv")["mean"].to_numpy()
        np.testing.assert_allclose(means, acts.astype(np.float64).mean(axis=(0, 2, 3)))
        assert (made / "manifest.json").is_file()
    read = yaml.safe_load((work / "results" / "report" / "config.yaml").read_text())["inputs"]["layers"]
    assert [e["artifacts"]["unitmeans"] for e in read] == [
        f"results/unitmeans/synthworld/{model}/{layer}" for layer in TINY["models"][0]["layers"]
    ]
    page = (work / "results" / "report" / "index.html").read_text()
    assert "<a href='#unitmeans'>Unit means</a>" in page and "<h2 id='unitmeans'>Unit means</h2>" in page
    shown = pd.read_csv(work / "results" / "report" / "tables" / "unit_means.csv")
    assert shown["layer"].tolist() == TINY["models"][0]["layers"]
    assert shown["mean"].tolist() == pytest.approx(
        [
            pd.read_csv(work / "results" / "unitmeans" / "synthworld" / model / layer / "means.csv")[
                "mean"
            ].mean()
            for layer in TINY["models"][0]["layers"]
        ]
    )
    assert planned_jobs(snakemake(work, "-n")) == {}
