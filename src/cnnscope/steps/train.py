"""Step ``train``: train a built-in CNN on the synthetic world and save its checkpoint."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import MISSING

from cnnscope.artifacts import TrainArtifact
from cnnscope.checkpoint import Checkpoint
from cnnscope.errors import ModelError
from cnnscope.io import atomic_file, write_json
from cnnscope.models.builtin import BUILTIN
from cnnscope.models.registry import ModelSpec
from cnnscope.stepkit.runner import Output, run_step
from cnnscope.stepkit.schema import Resumable, Threaded, register
from cnnscope.training import TrainParams, TrainSpec, save_model, train


@dataclass
class Config(Threaded, Resumable):
    model: ModelSpec = MISSING
    train: TrainParams = field(default_factory=TrainParams)


register("train", Config, model="convnet")


def body(cfg: Config) -> None:
    model = cfg.model
    if model.source != "builtin" or model.arch not in BUILTIN:
        raise ModelError(
            f"only built-in models are trained in the pipeline, got {model.source}:"
            f"{model.arch}; built-in: {', '.join(BUILTIN)}"
        )
    spec = TrainSpec(
        arch=model.arch,
        width=model.width,
        dropout=model.dropout,
        batch_norm=model.batch_norm,
        init_seed=model.seed,
        **dataclasses.asdict(cfg.train),
    )
    out = Output(cfg)
    out.identify(threads=cfg.threads)  # threads change the bytes
    with out.write(resumable=True) as tmp:
        ckpt = Checkpoint(tmp / "train.ckpt", cfg.checkpoint_s)
        net, metrics = train(spec, progress=cfg.progress, checkpoint=ckpt, snapshot=_keeper(spec.arch, tmp))
        save_model(net, spec.arch, TrainArtifact(tmp).model)
        write_json(TrainArtifact(tmp).metrics, metrics)
        ckpt.path.unlink(missing_ok=True)
    out.done(
        "%s val accuracy %.3f (chance %.3f) in %.0fs",
        spec.arch,
        metrics["val_accuracy"],
        metrics["chance"],
        metrics["seconds_total"],
    )


def _keeper(arch: str, tmp: Path):
    """Save each snapshot into the work directory (atomically: a kill mid-save leaves none)."""

    def keep(step: int, net: torch.nn.Module) -> None:
        path = TrainArtifact(tmp).snapshot(step)
        path.parent.mkdir(exist_ok=True)
        with atomic_file(path) as t:
            save_model(net, arch, t)

    return keep


if __name__ == "__main__":
    run_step("train", body)
