"""Step ``report``: the HTML study report (see cnnscope.report)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from omegaconf import MISSING

from cnnscope.artifacts import PAGE
from cnnscope.bounds import positive
from cnnscope.report import build_report
from cnnscope.report.inputs import ReportInputs
from cnnscope.stepkit.runner import Output, run_step
from cnnscope.stepkit.schema import Step, register


@dataclass
class Config(Step):
    inputs: ReportInputs = MISSING  # every artifact the page reads, passed by the rule
    study: str = ""  # the study config as JSON, shown on the page
    top_units: int = positive(8)
    top_images: int = positive(5)


register("report", Config)


def body(cfg: Config) -> None:
    out = Output(cfg)
    with out.write() as tmp:
        build_report(
            cfg.inputs,
            tmp,
            top_units=cfg.top_units,
            top_images=cfg.top_images,
            study=json.loads(cfg.study) if cfg.study else None,
        )
    out.done("%s", (Path(cfg.out) / PAGE).resolve())


if __name__ == "__main__":
    run_step("report", body)
