"""Step ``cueconflict``: a model's decisions on the three stimulus sets, and its shape bias."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING

from cnnscope.artifacts import CueConflictArtifact
from cnnscope.bounds import choice, positive
from cnnscope.device import pick_device
from cnnscope.io import write_json
from cnnscope.models.registry import ModelSpec, load_model
from cnnscope.shapebias.decisions import BATCH_SIZE
from cnnscope.shapebias.evaluate import CLASS_SETS, evaluate, summary
from cnnscope.stepkit.runner import Output, run_step
from cnnscope.stepkit.schema import OnDevice, register

ClassSet = choice("ClassSet", CLASS_SETS)


@dataclass
class Config(OnDevice):
    model: ModelSpec = MISSING
    name: str = MISSING  # the decision-maker's name in the raw-data tables
    stimuli: str = MISSING  # a stimuli step's output (texture-vs-shape layout)
    classes: ClassSet = ClassSet.world  # world (the 16 world shapes) | imagenet (16 ImageNet categories)
    batch_size: int = positive(BATCH_SIZE)


register("cueconflict", Config, model="convnet")


def body(cfg: Config) -> None:
    out = Output(cfg)
    out.verify(stimuli="stimuli")
    device = pick_device(cfg.device)
    loaded = load_model(cfg.model, device)
    decisions = evaluate(
        loaded,
        cfg.stimuli,
        cfg.name,
        CLASS_SETS[cfg.classes],
        cfg.batch_size,
        device,
        cfg.progress,
    )
    result = summary(decisions)
    with out.write() as tmp:
        for name, df in decisions.items():
            df.to_csv(CueConflictArtifact(tmp).decisions(name), index=False)
        write_json(CueConflictArtifact(tmp).summary, {"name": cfg.name, **result})
    out.done(
        "%s shape bias %.3f (%d shape / %d texture hits, cue fraction %.2f)",
        cfg.name,
        result["shape_bias"],
        result["shape_hits"],
        result["texture_hits"],
        result["cue_fraction"],
    )


if __name__ == "__main__":
    run_step("cueconflict", body)
