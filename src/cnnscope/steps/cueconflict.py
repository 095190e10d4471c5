"""Step ``cueconflict``: a model's decisions on the three stimulus sets, and its shape bias."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from omegaconf import MISSING

from cnnscope.bounds import choice, positive
from cnnscope.device import pick_device
from cnnscope.io import atomic_dir, verify, write_json, write_yaml
from cnnscope.models.registry import ModelSpec, load_model
from cnnscope.shapebias.decisions import BATCH_SIZE
from cnnscope.shapebias.evaluate import CLASS_SETS, evaluate, summary
from cnnscope.steps.runner import run_step
from cnnscope.steps.schema import OnDevice, register

log = logging.getLogger("cnnscope")
ClassSet = choice("ClassSet", CLASS_SETS)


@dataclass
class Config(OnDevice):
    model: ModelSpec = MISSING
    name: str = MISSING  # the decision-maker's name in the raw-data tables
    stimuli: str = MISSING  # a stimuli step's output (texture-vs-shape layout)
    classes: ClassSet = ClassSet.world  # world (the 16 world shapes) | imagenet (16 ImageNet categories)
    batch_size: int = positive(BATCH_SIZE)


register("cueconflict", Config)


def body(cfg: dict) -> None:
    verify(cfg["stimuli"], "stimuli")
    device = pick_device(cfg["device"])
    loaded = load_model(ModelSpec(**cfg["model"]), device)
    decisions = evaluate(
        loaded,
        cfg["stimuli"],
        cfg["name"],
        CLASS_SETS[cfg["classes"]],
        cfg["batch_size"],
        device,
        cfg["progress"],
    )
    result = summary(decisions)
    with atomic_dir(cfg["out"]) as tmp:
        for name, df in decisions.items():
            df.to_csv(tmp / f"{name}.csv", index=False)
        write_json(tmp / "summary.json", {"name": cfg["name"], **result})
        write_yaml(tmp / "config.yaml", cfg)
    log.info(
        "cueconflict: %s shape bias %.3f (%d shape / %d texture hits, cue fraction %.2f) -> %s",
        cfg["name"],
        result["shape_bias"],
        result["shape_hits"],
        result["texture_hits"],
        result["cue_fraction"],
        cfg["out"],
    )


if __name__ == "__main__":
    run_step("cueconflict", body)
