"""Step ``train``: train a built-in CNN on the synthetic world and save its checkpoint."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from omegaconf import MISSING

from cnnscope.artifacts import MODEL_FILE
from cnnscope.checkpoint import Checkpoint
from cnnscope.errors import ModelError
from cnnscope.io import resumable_dir, write_json, write_yaml
from cnnscope.models.builtin import BUILTIN
from cnnscope.models.registry import ModelSpec
from cnnscope.steps.runner import result_config, run_step
from cnnscope.steps.schema import Resumable, Threaded, register
from cnnscope.training import TrainParams, TrainSpec, save_model, train

log = logging.getLogger("cnnscope")


@dataclass
class Config(Threaded, Resumable):
    model: ModelSpec = MISSING
    train: TrainParams = field(default_factory=TrainParams)


register("train", Config)


def body(cfg: dict) -> None:
    model = cfg["model"]
    if model["source"] != "builtin" or model["arch"] not in BUILTIN:
        raise ModelError(
            f"only built-in models are trained in the pipeline, got {model['source']}:"
            f"{model['arch']}; built-in: {', '.join(BUILTIN)}"
        )
    spec = TrainSpec(arch=model["arch"], width=model["width"], **cfg["train"])
    fingerprint = {"config": result_config(cfg), "threads": cfg["threads"]}  # threads change the bytes
    with resumable_dir(cfg["out"], fingerprint) as (tmp, resumed):
        if resumed:
            log.info("train: continuing the work a killed run left in %s", tmp)
        ckpt = Checkpoint(tmp / "train.ckpt", cfg["checkpoint_s"])
        net, metrics = train(spec, progress=cfg["progress"], checkpoint=ckpt)
        save_model(net, spec.arch, tmp / MODEL_FILE)
        write_json(tmp / "metrics.json", metrics)
        write_yaml(tmp / "config.yaml", cfg)
        ckpt.path.unlink(missing_ok=True)
    log.info(
        "train: %s val accuracy %.3f (chance %.3f) in %.0fs; checkpoint %s/%s",
        spec.arch,
        metrics["val_accuracy"],
        metrics["chance"],
        metrics["seconds_total"],
        cfg["out"],
        MODEL_FILE,
    )


if __name__ == "__main__":
    run_step("train", body)
