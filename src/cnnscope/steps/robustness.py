"""Step ``robustness``: a model's decisions under the distortions of Geirhos et al., level by level."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
from omegaconf import MISSING

from cnnscope.artifacts import RobustnessArtifact
from cnnscope.bounds import bounded, choice, positive
from cnnscope.device import pick_device
from cnnscope.errors import CnnscopeError
from cnnscope.io import write_json
from cnnscope.models.registry import ModelSpec, load_model
from cnnscope.shapebias import robustness
from cnnscope.shapebias.decisions import BATCH_SIZE
from cnnscope.shapebias.distortions import DISTORTIONS
from cnnscope.shapebias.evaluate import CLASS_SETS, evaluate_distortions, local_images
from cnnscope.shapebias.stimuli import STIMULUS_SETS, load_rgb, single_cue
from cnnscope.stepkit.runner import Output, run_step
from cnnscope.stepkit.schema import OnDevice, register

ClassSet = choice("ClassSet", CLASS_SETS)
DistortionName = choice("DistortionName", DISTORTIONS)
SOURCE_SET = "original"  # the stimulus type that is distorted, as the papers distorted photographs


@dataclass
class Config(OnDevice):
    model: ModelSpec = MISSING
    name: str = MISSING  # the decision-maker's name in the raw-data tables
    stimuli: str | None = None  # a stimuli step's output: its original images are distorted
    images: str | None = None  # instead, a folder of 16-class images (<class>/<image>), e.g. ImageNet's
    size: int = positive(224)  # images of `images`: shorter side resized to it, centre-cropped
    classes: ClassSet = ClassSet.world  # world (the 16 world shapes) | imagenet (16 ImageNet categories)
    distortions: list[DistortionName] = field(default_factory=lambda: list(DISTORTIONS))
    seed: int = bounded(0, 0)  # the noise of the random distortions (noise, phase)
    # true: greyscale first, as the papers; false: in colour, every channel distorted alike (a variant
    # for models whose texture cue includes colour, as the world's: greyscale alone removes half of it)
    greyscale: bool = True
    batch_size: int = positive(BATCH_SIZE)


register("robustness", Config, model="convnet")


def body(cfg: Config) -> None:
    if cfg.stimuli is None and cfg.images is None:
        raise CnnscopeError("robustness needs stimuli=<a stimuli step output> or images=<a folder>")
    if not cfg.distortions:
        raise CnnscopeError("robustness.distortions is empty; name at least one of " + ", ".join(DISTORTIONS))
    out = Output(cfg)
    classes = CLASS_SETS[cfg.classes]
    if cfg.images is not None:  # a real study: the checkout ships no originals
        stimuli, images = local_images(cfg.images, classes, cfg.size)
    else:
        out.verify(stimuli="stimuli")
        stimuli = single_cue(f"{cfg.stimuli}/{STIMULUS_SETS[SOURCE_SET].folder}", classes)
        images = load_rgb(stimuli)
    device = pick_device(cfg.device)
    loaded = load_model(cfg.model, device)
    names = list(dict.fromkeys(str(d) for d in cfg.distortions))
    decisions = evaluate_distortions(
        loaded,
        stimuli,
        images,
        cfg.name,
        names,
        cfg.seed,
        classes,
        cfg.batch_size,
        device,
        cfg.progress,
        cfg.greyscale,
    )
    rows = [df.assign(experiment=DISTORTIONS[d].experiment) for d, df in decisions.items()]
    summary = robustness.summary(robustness.curves(pd.concat(rows)))
    with out.write() as tmp:
        for name, df in decisions.items():
            df.to_csv(RobustnessArtifact(tmp).decisions(name), index=False)
        write_json(
            RobustnessArtifact(tmp).summary,
            {
                "name": cfg.name,
                "images": len(stimuli),
                "greyscale": cfg.greyscale,
                "curves": summary.drop(columns="subj").to_dict("records"),
            },
        )
    out.done(
        "%s: %d images under %d distortions, mean distorted accuracy %.3f",
        cfg.name,
        len(stimuli),
        len(names),
        float(summary["distorted_accuracy"].mean()),
    )


if __name__ == "__main__":
    run_step("robustness", body)
