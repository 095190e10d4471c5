"""The model registry: one spec -> a ready model plus the preprocessing that belongs to its weights.

Three sources, chosen by ``ModelSpec.source``:

* ``torchvision`` -- any ``torchvision.models`` classifier by name; the weights enum supplies the
  normalisation, so nobody re-types ImageNet means;
* ``checkpoint``  -- a torchvision or built-in architecture with a local state dict (a ``module.``
  prefix from ``DataParallel`` is stripped; ``{"state_dict": ...}`` wrappers are unwrapped);
* ``builtin``     -- the small CNNs of :mod:`cnnscope.models.builtin`, usually with the checkpoint the
  pipeline's train step wrote.

The input normalisation is, first to last: the spec's ``mean``/``std``; those a checkpoint records
(the train step writes the world's); those of the torchvision weights; ImageNet's.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from cnnscope.bounds import bounded, choice, positive
from cnnscope.errors import ModelError
from cnnscope.models.builtin import BUILTIN
from cnnscope.models.layers import resolve_layer
from cnnscope.models.normalize import normalize, to_unit

Source = choice("Source", ("torchvision", "builtin", "checkpoint"))
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ModelSpec:
    """Which network to load (also the schema of every step's ``model`` config). ``weights`` applies to
    torchvision (an enum member name or ``DEFAULT``; ``None`` for random init); ``checkpoint`` to the
    other sources. ``mean``/``std`` override the normalisation (see the module docstring)."""

    source: Source
    arch: str
    weights: str | None = None
    checkpoint: str | None = None
    num_classes: int | None = bounded(None, 1)
    width: int = positive(24)
    mean: list[float] | None = None
    std: list[float] | None = bounded(None, 0, open_lo=True)
    seed: int = bounded(0, 0)  # of the random initialisation (weights: null)


@dataclass
class LoadedModel:
    module: nn.Module
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    meta: dict = field(default_factory=dict)

    def normalize(self, images_uint8: torch.Tensor) -> torch.Tensor:
        """``uint8 (B, H, W, 3)`` -> normalised ``float (B, 3, H, W)`` on the tensor's device."""
        return normalize(to_unit(images_uint8), self.mean, self.std)

    def digest(self) -> str:
        """SHA-256 of the weights (every state-dict entry): the model's identity for resumed work."""
        h = hashlib.sha256()
        for name, t in sorted(self.module.state_dict().items()):
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()


def torchvision_archs() -> list[str]:
    return sorted(torchvision.models.list_models(module=torchvision.models))


def _check_arch(spec: ModelSpec) -> None:
    if spec.source not in Source.__members__:
        raise ModelError(f"unknown model source {spec.source!r}; use one of {', '.join(Source.__members__)}")
    known = list(BUILTIN) if spec.source == "builtin" else torchvision_archs()
    if spec.source == "checkpoint":
        known = list(BUILTIN) + known
    if spec.arch not in known:
        raise ModelError(
            f"unknown model {spec.arch!r} for source {spec.source!r}. Valid names: " + ", ".join(known)
        )


def _torchvision_weights(spec: ModelSpec) -> torchvision.models.WeightsEnum | None:
    if spec.weights is None:
        return None
    enum = torchvision.models.get_model_weights(spec.arch)
    if spec.weights == "DEFAULT":
        return enum.DEFAULT
    names = [w.name for w in enum]
    if spec.weights not in names:
        raise ModelError(
            f"unknown weights {spec.weights!r} for {spec.arch}; valid: DEFAULT, {', '.join(names)}"
        )
    return enum[spec.weights]


def _download_weights(spec: ModelSpec, weights: torchvision.models.WeightsEnum) -> dict:
    try:
        return weights.get_state_dict(progress=True, check_hash=True)
    except (OSError, RuntimeError) as e:  # URLError is an OSError; a bad hash a RuntimeError
        target = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
        raise ModelError(
            f"could not get weights {weights} for {spec.arch} from {weights.url} ({e}). "
            f"Without network, download that file elsewhere and put it at {target} "
            "(the torch hub cache; set TORCH_HOME to move it), then rerun."
        ) from e


def build_architecture(spec: ModelSpec) -> nn.Module:
    """The bare architecture (random init), e.g. to validate layer names before any work."""
    _check_arch(spec)
    kwargs = {} if spec.num_classes is None else {"num_classes": spec.num_classes}
    if spec.arch in BUILTIN and spec.source != "torchvision":
        return BUILTIN[spec.arch](width=spec.width, **kwargs)
    return torchvision.models.get_model(spec.arch, weights=None, **kwargs)


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A state dict from ``path``, unwrapped from ``{"state_dict": ...}`` and stripped of ``module.``,
    and the wrapper's other entries (e.g. ``mean``/``std``; empty for a bare state dict)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"checkpoint {path} does not exist; train the model or fix the path")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several unrelated types for corrupt files
        raise ModelError(f"checkpoint {path} cannot be read ({e}); is it a torch state dict?") from e
    meta: dict[str, Any] = {}
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            meta = meta or {k: v for k, v in obj.items() if k != key}
            obj = obj[key]
    if not isinstance(obj, dict):
        raise ModelError(f"checkpoint {path} holds a {type(obj).__name__}, not a state dict")
    return {k.removeprefix("module."): v for k, v in obj.items()}, meta


def _check_finite(model: nn.Module, spec: ModelSpec) -> None:
    bad = [n for n, t in model.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        where = spec.checkpoint or spec.weights or "random initialisation"
        raise ModelError(
            f"{spec.arch} ({where}) has non-finite weights (NaN or Inf) in {', '.join(bad[:5])}"
            f"{' and more' if len(bad) > 5 else ''}; the checkpoint is damaged or its training diverged"
        )


def load_model(spec: ModelSpec, device: str | torch.device = "cpu") -> LoadedModel:
    """Build (random initialisation seeded by ``spec.seed``), load weights, refuse non-finite ones,
    move to ``device`` and switch to eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = build_architecture(spec)
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    if spec.source == "torchvision":
        weights = _torchvision_weights(spec)
        if weights is not None:
            model.load_state_dict(_download_weights(spec, weights))
            tf = weights.transforms()
            mean, std = tuple(tf.mean), tuple(tf.std)
    else:
        if spec.checkpoint is None:
            raise ModelError(f"model {spec.arch} from source {spec.source!r} needs a checkpoint path")
        state, meta = read_checkpoint(spec.checkpoint)
        mean, std = meta.get("mean", mean), meta.get("std", std)
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            raise ModelError(
                f"checkpoint {spec.checkpoint} does not fit {spec.arch} "
                f"(num_classes={spec.num_classes}, width={spec.width}): {e}"
            ) from e
    _check_finite(model, spec)
    mean = tuple(spec.mean if spec.mean is not None else mean)
    std = tuple(spec.std if spec.std is not None else std)
    model.to(device).eval()
    return LoadedModel(model, mean, std, {"arch": spec.arch, "source": spec.source})


def check_layers(spec: ModelSpec, layers: Sequence[str], model_name: str) -> None:
    """Fail fast on unknown architectures or layers, building the model on the meta device."""
    with torch.device("meta"):
        model = build_architecture(spec)
    for layer in layers:
        resolve_layer(model, layer, model_name)
