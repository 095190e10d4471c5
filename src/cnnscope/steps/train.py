"""Step ``train``: train a built-in CNN on the synthetic world and save its checkpoint."""

from __future__ import annotations

import logging

import torch

from cnnscope.checkpoint import Checkpoint
from cnnscope.errors import ModelError
from cnnscope.io import resumable_dir, write_json, write_yaml
from cnnscope.models.builtin import BUILTIN
from cnnscope.steps.runner import result_config, run_step
from cnnscope.training import TrainSpec, train

log = logging.getLogger("cnnscope")


def body(cfg: dict) -> None:
    model = cfg["model"]
    if model["source"] != "builtin" or model["arch"] not in BUILTIN:
        raise ModelError(
            f"only built-in models are trained in the pipeline, got {model['source']}:"
            f"{model['arch']}; built-in: {', '.join(BUILTIN)}"
        )
    spec = TrainSpec(arch=model["arch"], width=model["width"], **cfg["train"])
    with resumable_dir(cfg["out"], {"config": result_config(cfg)}) as (tmp, resumed):
        if resumed:
            log.info("train: continuing the work a killed run left in %s", tmp)
        ckpt = Checkpoint(tmp / "train.ckpt", cfg["checkpoint_s"])
        net, metrics = train(spec, progress=cfg["progress"], checkpoint=ckpt)
        torch.save({"state_dict": net.state_dict(), "arch": spec.arch}, tmp / "model.pt")
        write_json(tmp / "metrics.json", metrics)
        write_yaml(tmp / "config.yaml", cfg)
        ckpt.path.unlink(missing_ok=True)
    log.info(
        "train: %s val accuracy %.3f (chance %.3f) in %.0fs; checkpoint %s/model.pt",
        spec.arch,
        metrics["val_accuracy"],
        metrics["chance"],
        metrics["seconds_total"],
        cfg["out"],
    )


if __name__ == "__main__":
    run_step("train", body)
