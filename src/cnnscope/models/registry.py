"""The model registry: one spec -> a ready model plus the preprocessing that belongs to its weights.

Five sources, chosen by ``ModelSpec.source``:

* ``torchvision`` -- any ``torchvision.models`` classifier by name; the weights enum supplies the
  normalisation and class names, so nobody re-types ImageNet means;
* ``checkpoint``  -- a torchvision or built-in architecture with a local state dict (a ``module.``
  prefix from ``DataParallel`` is stripped; ``{"state_dict": ...}`` wrappers are unwrapped);
* ``builtin``     -- the small CNNs of :mod:`cnnscope.models.builtin`, usually with the checkpoint the
  pipeline's train step wrote;
* ``import``      -- any ``nn.Module`` a research repository builds: ``factory: "package.module:function"``
  called with ``kwargs`` (a module in the study folder imports too: steps run there), optionally
  with a ``checkpoint`` loaded into what it returns;
* ``timm``        -- a ``timm`` model by name (``pip install 'cnnscope[timm]'``), random, with timm's
  pretrained weights from its cache (``weights: DEFAULT``), or with a local ``checkpoint``.

The input normalisation is, first to last: the spec's ``mean``/``std``; those a checkpoint records
(the train step writes the world's); those of the torchvision or timm weights; ImageNet's. Class names
come from the spec's ``classes`` file, else the torchvision weights' categories.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn import functional as F

from cnnscope.bounds import bounded, choice, positive
from cnnscope.errors import ModelError, did_you_mean
from cnnscope.models.builtin import BUILTIN, BuiltinNet
from cnnscope.models.normalize import normalize, to_unit

if TYPE_CHECKING:  # torchvision takes a second or two to import: only models from it load it
    import torchvision

Source = choice("Source", ("torchvision", "builtin", "checkpoint", "import", "timm"))
# A factory as ``package.module:function`` (dotted module path, then the callable's name).
FACTORY = r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_.]*"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ModelSpec:
    """Which network to load (also the schema of every step's ``model`` config). ``weights`` applies to
    torchvision (an enum member name or ``DEFAULT``; ``None`` for random init) and timm (``DEFAULT``:
    timm's pretrained weights); ``checkpoint`` to the other sources. ``mean``/``std`` override the
    normalisation (see the module docstring); ``input_size`` resizes every image to that square size
    before the model (``None``: as the data come); ``classes`` is a text file of class names, one per
    output, in output order."""

    source: Source
    arch: str | None = None  # the architecture; for source import, a display name (default: factory)
    weights: str | None = None
    checkpoint: str | None = None
    factory: str | None = bounded(None, pattern=FACTORY)
    kwargs: dict[str, Any] = field(default_factory=dict)  # of the factory (source import)
    num_classes: int | None = bounded(None, 1)
    width: int = positive(BuiltinNet.width)
    dropout: float = bounded(BuiltinNet.dropout, 0, 1, open_hi=True)  # before the head (built-in convnet)
    batch_norm: bool = BuiltinNet.batch_norm  # after every conv (built-in convnet)
    mean: list[float] | None = None
    std: list[float] | None = bounded(None, 0, open_lo=True)
    input_size: int | None = bounded(None, 8, 4096)
    classes: str | None = None
    seed: int = bounded(0, 0)  # of the random initialisation (weights: null)


@dataclass
class LoadedModel:
    module: nn.Module
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    meta: dict = field(default_factory=dict)
    class_names: tuple[str, ...] | None = None  # one per output, in output order, when known
    input_size: int | None = None  # images are resized to this square size first (None: as they come)

    def outputs(self, size: int) -> int:
        """How many classes the model scores: its outputs on one blank image (``input_size`` square when
        the model asks for one, else ``size``)."""
        side = self.input_size or size
        device = next(self.module.parameters()).device
        with torch.no_grad():
            return self.module.eval()(torch.zeros(1, 3, side, side, device=device)).shape[1]

    def normalize(self, images_uint8: torch.Tensor) -> torch.Tensor:
        """``uint8 (B, H, W, 3)`` -> normalised ``float (B, 3, H, W)`` on the tensor's device, resized to
        ``input_size`` (bilinear, antialiased) when the model asks for one."""
        x = to_unit(images_uint8)
        if self.input_size is not None and tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            size = (self.input_size, self.input_size)
            x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        return normalize(x, self.mean, self.std)

    def digest(self) -> str:
        """SHA-256 of the weights (every state-dict entry): the model's identity for resumed work."""
        h = hashlib.sha256()
        for name, t in sorted(self.module.state_dict().items()):
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()


def torchvision_archs() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def _timm() -> Any:
    try:
        return importlib.import_module("timm")
    except ImportError:
        raise ModelError("source timm needs the timm package: pip install 'cnnscope[timm]'") from None


def _unknown(what: str, name: str, known: Sequence[str]) -> ModelError:
    return ModelError(f"unknown {what} {name!r}{did_you_mean(name, known)} (`cnnscope models` lists them)")


def _check_arch(spec: ModelSpec) -> None:
    if spec.source not in Source.__members__:
        raise ModelError(f"unknown model source {spec.source!r}; use one of {', '.join(Source.__members__)}")
    if spec.source == "import":
        if spec.factory is None:
            raise ModelError("source import needs factory: 'package.module:function' returning an nn.Module")
        return
    if spec.arch is None:
        raise ModelError(f"source {spec.source} needs arch: the architecture's name")
    if spec.source == "timm":
        if spec.arch.split(".")[0] not in _timm().list_models():
            raise _unknown("timm model", spec.arch, _timm().list_models())
        return
    known = list(BUILTIN) if spec.source == "builtin" else torchvision_archs()
    if spec.source == "checkpoint":
        known = list(BUILTIN) + known
    if spec.arch not in known:
        raise _unknown(f"model for source {spec.source!r}", spec.arch, known)


def _torchvision_weights(spec: ModelSpec) -> torchvision.models.WeightsEnum | None:
    if spec.weights is None:
        return None
    import torchvision

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
        return weights.get_state_dict(progress=False, check_hash=True)
    except (OSError, RuntimeError) as e:  # URLError is an OSError; a bad hash a RuntimeError
        target = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
        raise ModelError(
            f"could not get weights {weights} for {spec.arch} from {weights.url} ({e}). "
            f"Without network, download that file elsewhere and put it at {target} "
            "(the torch hub cache; set TORCH_HOME to move it), then rerun."
        ) from e


class FactoryError(ModelError):
    """A user's factory that fails (raises, or refuses its kwargs)."""


def _call_factory(spec: ModelSpec) -> nn.Module:
    """What ``spec.factory`` returns for ``spec.kwargs``; every failure is the user's, named as such."""
    module_name, _, attr = spec.factory.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise ModelError(
            f"factory {spec.factory}: cannot import {module_name} ({e}); put {module_name}.py in the "
            "study folder, install its package, or add its folder to PYTHONPATH"
        ) from e
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ModelError(f"factory {spec.factory}: {module_name} has no {attr}")
        obj = getattr(obj, part)
    try:
        model = obj(**spec.kwargs)
    except TypeError as e:
        raise FactoryError(f"factory {spec.factory} refused kwargs {dict(spec.kwargs)}: {e}") from e
    except Exception as e:  # the user's own code: its message, without our stack
        raise FactoryError(
            f"factory {spec.factory}({dict(spec.kwargs)}) raised {type(e).__name__}: {e}"
        ) from e
    if not isinstance(model, nn.Module):
        raise ModelError(f"factory {spec.factory} returned a {type(model).__name__}, not a torch nn.Module")
    return model


def _timm_model(spec: ModelSpec, pretrained: bool) -> nn.Module:
    kwargs = {} if spec.num_classes is None else {"num_classes": spec.num_classes}
    try:
        return _timm().create_model(spec.arch, pretrained=pretrained, **kwargs)
    except (OSError, RuntimeError, ValueError) as e:  # hub errors are OSErrors; no offline cache too
        if not pretrained:
            raise ModelError(f"timm cannot build {spec.arch}: {e}") from e
        raise ModelError(
            f"could not get timm's pretrained weights for {spec.arch} ({str(e).splitlines()[0]}). "
            "Without network, fetch them elsewhere into the Hugging Face cache (HF_HOME) and set "
            "HF_HUB_OFFLINE=1, or give checkpoint: a local weights file"
        ) from e


def build_architecture(spec: ModelSpec, pretrained: bool = False) -> nn.Module:
    """The bare architecture (random init unless ``pretrained`` timm weights are asked for), e.g. to
    validate layer names before any work."""
    _check_arch(spec)
    if spec.source == "import":
        return _call_factory(spec)
    if spec.source == "timm":
        return _timm_model(spec, pretrained)
    kwargs = {} if spec.num_classes is None else {"num_classes": spec.num_classes}
    if spec.arch in BUILTIN and spec.source != "torchvision":
        return BuiltinNet(spec.arch, spec.width, spec.dropout, spec.batch_norm).build(**kwargs)
    import torchvision

    return torchvision.models.get_model(spec.arch, weights=None, **kwargs)


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A state dict from ``path``, unwrapped from ``{"state_dict": ...}`` and stripped of ``module.``,
    and the wrapper's other entries (e.g. ``mean``/``std``; empty for a bare state dict). A
    ``.safetensors`` file (timm's and Hugging Face's format) is read with safetensors."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"checkpoint {path} does not exist; train the model or fix the path")
    try:
        if path.suffix == ".safetensors":
            obj = importlib.import_module("safetensors.torch").load_file(path)
        else:
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


def read_class_names(path: str | Path) -> tuple[str, ...]:
    """Class names from a text file, one per line in output order (blank lines and ``#`` lines skipped)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"classes file {path} does not exist; give a text file with one class name per line")
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    names = tuple(line for line in lines if line and not line.startswith("#"))
    if not names:
        raise ModelError(f"classes file {path} names no class")
    return names


def _check_finite(model: nn.Module, spec: ModelSpec) -> None:
    bad = [n for n, t in model.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        where = spec.checkpoint or spec.weights or "random initialisation"
        raise ModelError(
            f"{model_name(spec)} ({where}) has non-finite weights (NaN or Inf) in {', '.join(bad[:5])}"
            f"{' and more' if len(bad) > 5 else ''}; the checkpoint is damaged or its training diverged"
        )


def model_name(spec: ModelSpec) -> str:
    """How tables and messages name the architecture: ``arch``, or the factory of an imported model."""
    return spec.arch or spec.factory or "model"


def needs_download(spec: ModelSpec) -> bool:
    """Whether loading ``spec`` fetches weights from the network (torchvision's or timm's pretrained
    weights): on a cluster, done once on the submit host before any GPU job."""
    return spec.source in ("torchvision", "timm") and spec.weights is not None and spec.checkpoint is None


def _load_weights(model: nn.Module, spec: ModelSpec) -> dict[str, Any]:
    """Load ``spec``'s weights into ``model``; what the weights know of their inputs (mean, std, class
    names, input size) comes back."""
    found: dict[str, Any] = {}
    if spec.source == "torchvision" and spec.checkpoint is None:
        weights = _torchvision_weights(spec)
        if weights is not None:
            model.load_state_dict(_download_weights(spec, weights))
            tf = weights.transforms()
            found = {"mean": tuple(tf.mean), "std": tuple(tf.std)}
            if "categories" in weights.meta:
                found["classes"] = tuple(weights.meta["categories"])
        return found
    if spec.source == "timm":
        cfg = getattr(model, "pretrained_cfg", None) or {}
        found = {k: tuple(cfg[k]) for k in ("mean", "std") if k in cfg}
        if "input_size" in cfg:
            found["input_size"] = int(cfg["input_size"][-1])
    if spec.checkpoint is None:
        if spec.source in ("builtin", "checkpoint"):
            raise ModelError(f"model {spec.arch} from source {spec.source!r} needs a checkpoint path")
        return found  # import: the factory's own weights; timm: random or pretrained at build
    state, meta = read_checkpoint(spec.checkpoint)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ModelError(
            f"checkpoint {spec.checkpoint} does not fit {model_name(spec)} "
            f"(num_classes={spec.num_classes}, width={spec.width}, kwargs={dict(spec.kwargs)}): {e}"
        ) from e
    return found | {k: meta[k] for k in ("mean", "std") if k in meta}


def load_model(spec: ModelSpec, device: str | torch.device = "cpu") -> LoadedModel:
    """Build (random initialisation seeded by ``spec.seed``), load weights, refuse non-finite ones,
    move to ``device`` and switch to eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = build_architecture(spec, pretrained=spec.source == "timm" and needs_download(spec))
    found = _load_weights(model, spec)
    _check_finite(model, spec)
    mean = tuple(spec.mean if spec.mean is not None else found.get("mean", IMAGENET_MEAN))
    std = tuple(spec.std if spec.std is not None else found.get("std", IMAGENET_STD))
    names = read_class_names(spec.classes) if spec.classes is not None else found.get("classes")
    size = spec.input_size if spec.input_size is not None else found.get("input_size")
    model.to(device).eval()
    meta = {"arch": model_name(spec), "source": spec.source}
    return LoadedModel(model, mean, std, meta, names, size)


def skeleton(spec: ModelSpec) -> nn.Module:
    """The architecture, random, on the meta device (no memory, no compute), to check a study before
    any job; a factory that cannot build there (it loads its own weights, say) is built on the CPU.

    The built-in networks are built on the CPU, from a forked random state (the caller's draws are
    unchanged): they are small (a forward pass at 224 px takes milliseconds), and BatchNorm on the meta
    device imports torch's compiler, about 3 s of every study check that composes afresh.
    """
    if spec.source == "builtin":
        with torch.random.fork_rng(devices=[]):
            return build_architecture(spec)
    try:
        with torch.device("meta"):
            return build_architecture(spec)
    except FactoryError:
        return build_architecture(spec)  # raises again, with the factory's own message, if it fails there too
    except ModelError:
        raise
    except Exception:
        if spec.source != "import":
            raise
        return build_architecture(spec)


def output_count(spec: ModelSpec, input_size: int = 224, model: nn.Module | None = None) -> int:
    """How many outputs (logits) the model's head has, from one forward pass of its skeleton (``model``:
    one already built from ``spec``, so a caller that has it does not build it again)."""
    model = (skeleton(spec) if model is None else model).eval()
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("meta")
    size = spec.input_size or input_size
    with torch.no_grad():
        out = model(torch.zeros(1, 3, size, size, device=device))
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise ModelError(f"{model_name(spec)} returns {type(out).__name__}, not a (batch, classes) tensor")
    return out.shape[-1]
