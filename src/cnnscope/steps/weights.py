"""Step ``weights``: fetch a model's pretrained weights once, before any job that loads the model.

On a cluster, compute nodes are often offline and GPU hours are dear, so this runs on the submit host
(a local rule): it fills torchvision's or timm's cache (on the shared file system; torchvision checks
the file's hash), and records which weights it fetched and their digest for provenance.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from omegaconf import MISSING

from cnnscope.io import atomic_dir, write_json, write_yaml
from cnnscope.models.registry import ModelSpec, load_model, model_name
from cnnscope.steps.runner import run_step
from cnnscope.steps.schema import Step, register

log = logging.getLogger("cnnscope")
WEIGHTS_FILE = "weights.json"


@dataclass
class Config(Step):
    model: ModelSpec = MISSING


register("weights", Config)


def body(cfg: dict) -> None:
    spec = ModelSpec(**cfg["model"])
    loaded = load_model(spec)
    record = {
        "model": model_name(spec),
        "source": spec.source,
        "weights": spec.weights,
        "digest": loaded.digest(),
    }
    with atomic_dir(cfg["out"]) as tmp:
        write_json(tmp / WEIGHTS_FILE, record)
        write_yaml(tmp / "config.yaml", cfg)
    log.info(
        "weights: %s %s (sha256 %s) cached -> %s",
        record["model"],
        spec.weights,
        record["digest"][:12],
        cfg["out"],
    )


if __name__ == "__main__":
    run_step("weights", body)
