"""Step ``cueconflict``: a model's decisions on the three stimulus sets, and its shape bias."""

from __future__ import annotations

import logging

from cnnscope.data import shapetexture
from cnnscope.errors import CnnscopeError
from cnnscope.features import pick_device
from cnnscope.io import atomic_dir, write_json, write_yaml
from cnnscope.models.registry import ModelSpec, load_model
from cnnscope.shapebias import classes as imagenet16
from cnnscope.shapebias.evaluate import evaluate, summary
from cnnscope.steps.runner import run_step

log = logging.getLogger("cnnscope")
CLASS_SETS = {"world": shapetexture.CLASSES, "imagenet": imagenet16.CLASSES}


def body(cfg: dict) -> None:
    if cfg["classes"] not in CLASS_SETS:
        raise CnnscopeError(f"classes={cfg['classes']!r}; use one of {', '.join(CLASS_SETS)}")
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
