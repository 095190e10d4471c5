"""Step ``weights``: fetch a model's pretrained weights once, before any job that loads the model.

On a cluster, compute nodes are often offline and GPU hours are dear, so this runs on the submit host
(a local rule): it fills torchvision's or timm's cache (on the shared file system; torchvision checks
the file's hash), and records which weights it fetched and their digest for provenance.
"""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING

from cnnscope.artifacts import WeightsArtifact
from cnnscope.io import write_json
from cnnscope.models.registry import ModelSpec, load_model, model_name
from cnnscope.stepkit.runner import Output, run_step
from cnnscope.stepkit.schema import Step, register


@dataclass
class Config(Step):
    model: ModelSpec = MISSING


register("weights", Config, model="resnet18")


def body(cfg: Config) -> None:
    spec = cfg.model
    loaded = load_model(spec)
    record = {
        "model": model_name(spec),
        "source": spec.source,
        "weights": spec.weights,
        "digest": loaded.digest(),
    }
    out = Output(cfg)
    with out.write() as tmp:
        write_json(WeightsArtifact(tmp).record, record)
    out.done("%s %s (sha256 %s) cached", record["model"], spec.weights, record["digest"][:12])


if __name__ == "__main__":
    run_step("weights", body)
