"""Step ``report``: the HTML study report (see cnnscope.report)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from omegaconf import MISSING

from cnnscope.bounds import positive
from cnnscope.io import atomic_dir, write_yaml
from cnnscope.report import build_report
from cnnscope.report.inputs import ReportInputs
from cnnscope.steps.runner import run_step
from cnnscope.steps.schema import Step, register

log = logging.getLogger("cnnscope")


@dataclass
class Config(Step):
    inputs: ReportInputs = MISSING  # every artifact the page reads, passed by the rule
    study: str = ""  # the study config as JSON, shown on the page
    top_units: int = positive(8)
    top_images: int = positive(5)


register("report", Config)


def body(cfg: dict) -> None:
    out = Path(cfg["out"])
    with atomic_dir(out) as tmp:
        build_report(
            ReportInputs.from_dict(cfg["inputs"]),
            tmp,
            top_units=cfg["top_units"],
            top_images=cfg["top_images"],
            study=json.loads(cfg["study"]) if cfg["study"] else None,
        )
        write_yaml(tmp / "config.yaml", cfg)
    log.info("report: %s", (out / "index.html").resolve())


if __name__ == "__main__":
    run_step("report", body)
