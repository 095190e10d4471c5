"""Training the small built-in CNNs on the synthetic world (classify the object's shape).

Training images come from the same drawing code as the probe set but from another seed, so the model
is never dissected on images it saw. Budgeted in steps, not wall time, and deterministic on the CPU
(fixed seeds, deterministic algorithms, a fixed thread count), so a rerun gives the same weights.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from cnnscope.data import render
from cnnscope.data.synthworld import object_sample
from cnnscope.models.builtin import BUILTIN

WORLD_MEAN = (0.5, 0.5, 0.5)
WORLD_STD = (0.25, 0.25, 0.25)


@dataclass(frozen=True)
class TrainSpec:
    arch: str = "convnet"
    width: int = 24
    image_size: int = 64
    n_train: int = 6000
    n_val: int = 1000
    steps: int = 1000
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0


def render_set(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` single-object images ``uint8 (n, size, size, 3)`` and their shape classes."""
    rng = np.random.default_rng(seed)
    classes = np.arange(n) % len(render.OBJECTS)
    rng.shuffle(classes)
    images = np.empty((n, size, size, 3), np.uint8)
    for i, k in enumerate(classes):
        images[i] = object_sample(rng, size, shape=int(k)).rgb.round().astype(np.uint8)
    return images, classes.astype(np.int64)


def _normalize(images: torch.Tensor) -> torch.Tensor:
    x = images.permute(0, 3, 1, 2).float() / 255
    mean = torch.tensor(WORLD_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(WORLD_STD).view(1, 3, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def accuracy(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray, bs: int = 256) -> float:
    model.eval()
    correct = 0
    for a in range(0, len(images), bs):
        logits = model(_normalize(torch.from_numpy(images[a : a + bs])))
        correct += int((logits.argmax(1).numpy() == labels[a : a + bs]).sum())
    return correct / len(images)


def train(spec: TrainSpec, progress: bool = True) -> tuple[torch.nn.Module, dict]:
    """Train ``spec.arch`` to classify shapes; returns the model and its metrics."""
    torch.manual_seed(spec.seed)
    torch.use_deterministic_algorithms(True)
    t0 = time.perf_counter()
    x_train, y_train = render_set(spec.n_train, spec.image_size, seed=10_000 + spec.seed)
    x_val, y_val = render_set(spec.n_val, spec.image_size, seed=20_000 + spec.seed)
    t_data = time.perf_counter() - t0
    model = BUILTIN[spec.arch](num_classes=len(render.OBJECTS), width=spec.width)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=spec.lr, total_steps=spec.steps)
    gen = torch.Generator().manual_seed(spec.seed)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    model.train()
    losses = []
    for _ in tqdm(range(spec.steps), desc=f"train {spec.arch}", disable=not progress):
        idx = torch.randint(len(xt), (spec.batch_size,), generator=gen)
        xb = xt[idx]
        flip = torch.rand(len(idx), generator=gen) < 0.5
        xb = torch.where(flip.view(-1, 1, 1, 1), xb.flip(2), xb)
        loss = F.cross_entropy(model(_normalize(xb)), yt[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    metrics = {
        "train_accuracy": accuracy(model, x_train[:1000], y_train[:1000]),
        "val_accuracy": accuracy(model, x_val, y_val),
        "chance": 1 / len(render.OBJECTS),
        "final_loss": float(np.mean(losses[-50:])),
        "seconds_data": round(t_data, 2),
        "seconds_total": round(time.perf_counter() - t0, 2),
        "classes": list(render.OBJECTS),
    }
    model.eval()
    return model, metrics
