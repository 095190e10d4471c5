"""Step ``report``: the HTML study report (see cnnscope.report)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from cnnscope.io import atomic_dir, write_yaml
from cnnscope.report import build_report
from cnnscope.steps.runner import run_step

log = logging.getLogger("cnnscope")


def body(cfg: dict) -> None:
    out = Path(cfg["out"])
    with atomic_dir(out) as tmp:
        build_report(
            Path(cfg["packed"]),
            Path(cfg["results"]),
            cfg["probe"],
            cfg["layers"],
            tmp,
            cfg["top_units"],
            cfg["top_images"],
            cfg["cue_conflict"],
            cfg["stimuli"],
            cfg["references"],
            cfg["attribution"],
            json.loads(cfg["study"]) if cfg["study"] else None,
        )
        write_yaml(tmp / "config.yaml", cfg)
    log.info("report: %s", (out / "index.html").resolve())


if __name__ == "__main__":
    run_step("report", body)
