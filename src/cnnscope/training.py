"""Training the small built-in CNNs on the shape/texture world (classify the object's shape).

The regime sets how often an object's texture agrees with its shape class
(:mod:`cnnscope.data.shapetexture`): ``standard`` makes texture a shortcut, ``shape`` randomises it.
Budgeted in steps, not wall time, and deterministic on the CPU (fixed seeds, deterministic
algorithms, a fixed thread count), so a rerun gives the same weights.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cnnscope.bounds import Range, bounded, choice, positive
from cnnscope.checkpoint import Checkpoint, resume
from cnnscope.data import shapetexture
from cnnscope.errors import CnnscopeError
from cnnscope.io import save_torch
from cnnscope.models.builtin import BuiltinNet
from cnnscope.models.normalize import normalize, to_unit
from cnnscope.progress import track

# The input normalisation of every model trained here; saved in its checkpoint, read by the registry.
WORLD_MEAN = (0.5, 0.5, 0.5)
WORLD_STD = (0.25, 0.25, 0.25)
Regime = choice("Regime", shapetexture.REGIMES)
# The training labels: the shapes, or a random permutation of them (Adebayo et al. 2018's data
# randomisation test: a model that can only memorise, whose explanations should differ from the true
# model's if they explain what it learned).
LABELS = ("shapes", "permuted")
Labels = choice("Labels", LABELS)


@dataclass
class TrainParams:
    """How to train: the world's regime and size and the schedule (the train step's ``train`` config)."""

    regime: Regime = Regime.standard  # standard (texture agrees 90%) | shape (texture random)
    labels: Labels = Labels.shapes  # shapes (the true classes) | permuted (randomly permuted)
    image_size: int = bounded(64, 8)
    n_train: int = positive(6000)
    n_val: int = positive(1000)
    steps: int = positive(1000)
    batch_size: int = positive(64)
    lr: float = bounded(3e-3, 0, open_lo=True)
    weight_decay: float = bounded(1e-4, 0)
    seed: int = bounded(0, 0)
    # Steps after which the weights are kept as snapshots (0: the initialisation), for studying how
    # interpretability emerges over training (Bau et al. 2017, Fig. 10); keeping them changes no bit.
    snapshots: list[int] = field(default_factory=list, metadata={"range": Range(0)})


@dataclass
class TrainSpec(TrainParams, BuiltinNet):
    """What to train (:class:`BuiltinNet`: the step takes it from its model config, ``init_seed`` from
    the model's ``seed``) and how (:class:`TrainParams`; its ``seed`` draws the world and the batches,
    so repeats of one condition differ only in their initialisation)."""


def _normalize(images: torch.Tensor) -> torch.Tensor:
    return normalize(to_unit(images), WORLD_MEAN, WORLD_STD)


def save_model(model: torch.nn.Module, arch: str, path: Path) -> None:
    """Write a trained model's state dict with its architecture and input normalisation."""
    meta = {"arch": arch, "mean": list(WORLD_MEAN), "std": list(WORLD_STD)}
    save_torch({"state_dict": model.state_dict(), **meta}, path)


@torch.no_grad()
def accuracy(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray, bs: int = 256) -> float:
    model.eval()
    correct = 0
    for a in range(0, len(images), bs):
        logits = model(_normalize(torch.from_numpy(images[a : a + bs])))
        correct += int((logits.argmax(1).numpy() == labels[a : a + bs]).sum())
    return correct / len(images)


Snapshot = Callable[[int, torch.nn.Module], None]


def train(
    spec: TrainSpec,
    progress: bool = True,
    checkpoint: Checkpoint | None = None,
    snapshot: Snapshot | None = None,
) -> tuple[torch.nn.Module, dict]:
    """Train ``spec.arch`` to classify shapes; returns the model and its metrics.

    Deterministic algorithms are switched on for the run, without torch's filling of new tensors
    (memory every operation writes before it reads: filling it cost 5% of a step and changes no bit),
    and the caller's settings are restored after.
    ``checkpoint`` saves the model, optimiser, schedule and random states; a run given a checkpoint
    that holds state continues from it and ends with the same weights as an uninterrupted run.
    ``snapshot(step, model)`` is called after each step of ``spec.snapshots`` (0: before the first),
    with the weights a run stopped there would have; a resumed run calls it again for the steps it
    redoes, with the same weights. Each snapshot's validation accuracies are in the metrics.
    """
    deterministic = torch.are_deterministic_algorithms_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    try:
        return _train(spec, progress, checkpoint, snapshot)
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.utils.deterministic.fill_uninitialized_memory = fill


def _train(
    spec: TrainSpec, progress: bool, checkpoint: Checkpoint | None, snapshot: Snapshot | None
) -> tuple[torch.nn.Module, dict]:
    if spec.regime not in shapetexture.REGIMES:
        raise CnnscopeError(f"unknown regime {spec.regime!r}; use one of {', '.join(shapetexture.REGIMES)}")
    late = [k for k in spec.snapshots if k > spec.steps]
    if late:
        raise CnnscopeError(f"train.snapshots {late} lie beyond train.steps={spec.steps}; drop them")
    keep = set(spec.snapshots) if snapshot else set()
    torch.manual_seed(spec.seed)
    torch.use_deterministic_algorithms(True)
    torch.utils.deterministic.fill_uninitialized_memory = False
    t0 = time.perf_counter()
    agreement = shapetexture.REGIMES[spec.regime]
    x_train, y_train, _ = shapetexture.training_set(
        spec.n_train, spec.image_size, agreement, seed=10_000 + spec.seed
    )
    if spec.labels == "permuted":  # a stream of its own: the images stay those of the true labels
        y_train = np.random.default_rng([10_000 + spec.seed, 1]).permutation(y_train)
    # Clean validation images: every texture agrees with its shape (like natural images) ...
    x_val, y_val, _ = shapetexture.training_set(spec.n_val, spec.image_size, 1.0, 20_000 + spec.seed)
    # ... and images whose texture is random, where only the shape can be right.
    x_rnd, y_rnd, _ = shapetexture.training_set(spec.n_val, spec.image_size, None, 30_000 + spec.seed)
    t_data = time.perf_counter() - t0
    classes = shapetexture.CLASSES
    torch.manual_seed(spec.init_seed)  # the world above draws from numpy, not from torch
    model = spec.build(num_classes=len(classes))
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=spec.lr, total_steps=spec.steps)
    gen = torch.Generator().manual_seed(spec.seed)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    model.train()
    losses: list[float] = []
    state, start = resume(checkpoint, "train", "step", spec.steps)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["schedule"])
        gen.set_state(state["generator"])
        torch.set_rng_state(state["rng"])
        losses = state["losses"].tolist()
    scores: dict[int, dict[str, float]] = {
        int(k): v for k, v in (state or {}).get("snapshot_scores", {}).items()
    }

    def kept(step: int) -> None:
        """Keep the snapshot and score it on the validation sets, leaving the model in training mode."""
        snapshot(step, model)
        scores[step] = {
            "val_accuracy": accuracy(model, x_val, y_val),
            "val_accuracy_random_texture": accuracy(model, x_rnd, y_rnd),
        }
        model.train()

    if start == 0 and 0 in keep:
        kept(0)
    steps = range(start, spec.steps)
    for step in track(steps, f"train {spec.arch}", enabled=progress, initial=start, total=spec.steps):
        idx = torch.randint(len(xt), (spec.batch_size,), generator=gen)
        xb = xt[idx]
        flip = torch.rand(len(idx), generator=gen) < 0.5
        xb = torch.where(flip.view(-1, 1, 1, 1), xb.flip(2), xb)
        loss = F.cross_entropy(model(_normalize(xb)), yt[idx])
        if not torch.isfinite(loss):
            raise CnnscopeError(
                f"training {spec.arch} diverged at step {step + 1}: the loss is {loss.item()}; lower train.lr"
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step + 1 in keep:
            kept(step + 1)
        if checkpoint and checkpoint.due():
            checkpoint.save(
                {
                    "step": step + 1,
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "schedule": sched.state_dict(),
                    "generator": gen.get_state(),
                    "rng": torch.get_rng_state(),
                    "losses": torch.tensor(losses, dtype=torch.float64),
                    "snapshot_scores": scores,
                }
            )
    metrics = {
        "train_accuracy": accuracy(model, x_train[:1000], y_train[:1000]),
        "val_accuracy": accuracy(model, x_val, y_val),
        "val_accuracy_random_texture": accuracy(model, x_rnd, y_rnd),
        "chance": 1 / len(classes),
        "regime": spec.regime,
        "labels": spec.labels,
        "final_loss": float(np.mean(losses[-50:])),
        "seconds_data": round(t_data, 2),
        "seconds_total": round(time.perf_counter() - t0, 2),
        "classes": list(classes),
        # each snapshot's validation accuracy, clean and with random textures (train.snapshots)
        "snapshots": {str(k): scores[k] for k in sorted(scores)},
    }
    model.eval()
    return model, metrics
