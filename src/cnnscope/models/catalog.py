"""What a user can name: the layers of a model and the models themselves.

Study configs address layers by dotted module name and models by architecture or config name; these
functions list both so nobody has to read torchvision's source (or guess) to write a config. Layer
shapes come from one forward pass with hooks, on the meta device when the model lives there, so listing
the layers of a large network costs neither memory nor compute.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from cnnscope.errors import ModelError
from cnnscope.models.builtin import BUILTIN
from cnnscope.models.layers import resolve_layer
from cnnscope.models.registry import ModelSpec, output_count, skeleton, torchvision_archs

MODEL_KINDS = ("built-in", "torchvision", "config")


@dataclass(frozen=True)
class LayerInfo:
    """One layer whose output is a feature map, i.e. something cnnscope can extract and dissect.

    ``calls`` is how many times the module ran in one forward pass: a module reused inside a block (the
    single ReLU of a torchvision ``Bottleneck`` runs three times) has one name but several outputs.
    ``shape`` is the output of the *last* call, because that is what a forward hook used for extraction
    keeps (each call overwrites the previous one).
    """

    name: str  # dotted module name, as layers are addressed in cnnscope (``layer4.0.conv2``)
    kind: str  # module class name
    shape: tuple[int, int, int]  # (C, H, W) of the output, batch dimension dropped
    units: int  # C: the units dissection and feature visualisation address in this layer
    calls: int


def _device_of(model: nn.Module) -> torch.device:
    tensor = next(model.parameters(), None)
    if tensor is None:
        tensor = next(model.buffers(), None)
    return torch.device("cpu") if tensor is None else tensor.device


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode for the probe pass: in training mode BatchNorm would update its running statistics
    (a real model must come back unchanged) and reject a batch of one at 1x1 resolution."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def layer_table(model: nn.Module, input_size: int = 224, contains: str | None = None) -> list[LayerInfo]:
    """Every named (non-root) module of ``model`` whose output is a 4-D tensor, in definition order.

    Found with forward hooks during one forward pass of a ``(1, 3, input_size, input_size)`` input: on
    the meta device when the model's parameters are there (shapes only, no memory or compute), otherwise
    without gradients on the model's device. ``contains`` keeps names containing that text. The hooks
    are removed and training flags restored even if the forward pass fails, which raises
    :class:`ModelError` (usually because the input is too small for the network's downsampling).
    """
    modules = [(name, m) for name, m in model.named_modules() if name]
    seen: dict[str, tuple[int, torch.Size | None]] = {}

    def hook_for(name: str) -> Callable[[nn.Module, Any, Any], None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            shape = output.shape if isinstance(output, torch.Tensor) and output.dim() == 4 else None
            seen[name] = (seen.get(name, (0, None))[0] + 1, shape)

        return hook

    handles = [m.register_forward_hook(hook_for(name)) for name, m in modules]
    try:
        x = torch.empty(1, 3, input_size, input_size, device=_device_of(model))
        with torch.no_grad(), _eval_mode(model):
            model(x)
    except (RuntimeError, ValueError, IndexError) as e:
        detail = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ModelError(
            f"a forward pass of {type(model).__name__} on a {input_size}x{input_size} input failed "
            f"({detail}); try a larger input size, e.g. {max(224, 2 * input_size)}"
        ) from e
    finally:
        for handle in handles:
            handle.remove()

    rows = []
    for name, module in modules:
        calls, shape = seen.get(name, (0, None))
        if shape is not None and (contains is None or contains in name):
            c, h, w = shape[1:]
            rows.append(LayerInfo(name, type(module).__name__, (c, h, w), c, calls))
    return rows


def format_layers(rows: list[LayerInfo]) -> str:
    """An aligned plain-text table of ``rows``; the calls column appears only if some layer ran more
    than once, since it matters only for reused modules."""
    if not rows:
        return "no layers with a 4-D output"
    header = ["name", "kind", "output (CxHxW)", "units"]
    table = [[r.name, r.kind, "x".join(map(str, r.shape)), str(r.units)] for r in rows]
    if any(r.calls > 1 for r in rows):
        header.append("calls")
        for line, r in zip(table, rows, strict=True):
            line.append(str(r.calls) if r.calls > 1 else "")
    widths = [max(len(line[i]) for line in [header, *table]) for i in range(len(header))]
    numeric = {"units", "calls"}
    return "\n".join(
        "  ".join(
            cell.rjust(w) if col in numeric else cell.ljust(w)
            for col, cell, w in zip(header, line, widths, strict=True)
        ).rstrip()
        for line in [header, *table]
    )


def _config_models(config_dir: Path) -> list[dict[str, str]]:
    entries = []
    for path in sorted((config_dir / "model").glob("*.yaml")):
        if path.stem == "model_schema":
            continue
        try:
            cfg = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ModelError(f"model config {path} is not valid YAML ({e})") from e
        if not isinstance(cfg, dict):
            raise ModelError(f"model config {path} holds a {type(cfg).__name__}, not a mapping")
        settings = {k: v for k, v in cfg.items() if k != "defaults"}
        ordered = [k for k in ("source", "arch") if k in settings] + [
            k for k in settings if k not in ("source", "arch")
        ]
        detail = " ".join(f"{k}={settings[k]}" for k in ordered)
        entries.append({"kind": "config", "name": path.stem, "detail": detail})
    return entries


def available_models(config_dir: Path) -> list[dict[str, str]]:
    """Every model a user can name, as ``{"kind", "name", "detail"}`` dicts: the built-in architectures
    (``source: builtin``), torchvision classifiers (``source: torchvision``) and the configured models
    of ``config_dir/model/*.yaml`` (``model=<name>`` on the command line). A missing ``model`` folder
    simply contributes no configured models."""
    builtin = [
        {"kind": "built-in", "name": name, "detail": f"{factory.__module__}.{factory.__qualname__}"}
        for name, factory in BUILTIN.items()
    ]
    torchvision = [
        {"kind": "torchvision", "name": name, "detail": f"torchvision.models.{name}"}
        for name in torchvision_archs()
    ]
    return builtin + torchvision + _config_models(Path(config_dir))


def format_models(entries: list[dict[str, str]]) -> str:
    """``entries`` grouped under one heading per kind; the many torchvision names are wrapped onto
    lines of about 100 characters, the others listed one per line with their detail."""
    blocks = []
    for kind in MODEL_KINDS:
        group = [e for e in entries if e["kind"] == kind]
        if not group:
            continue
        lines = [f"{kind} ({len(group)}):"]
        if kind == "torchvision":
            lines.append(
                textwrap.fill(
                    ", ".join(e["name"] for e in group),
                    width=100,
                    initial_indent="  ",
                    subsequent_indent="  ",
                    break_on_hyphens=False,
                )
            )
        else:
            width = max(len(e["name"]) for e in group)
            lines += [f"  {e['name'].ljust(width)}  {e['detail']}".rstrip() for e in group]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def check_layers(spec: ModelSpec, layers: Sequence[str], name: str, input_size: int = 224) -> None:
    """Fail fast, on the model's skeleton, on what would fail only in a job: a ``mean``/``std`` that is
    not one value per RGB channel, an unknown layer, a layer whose output is not 4-D feature maps (an
    ``nn.Linear``, say), and a forward whose output is not a ``(batch, classes)`` logits tensor."""
    for key in ("mean", "std"):
        value = getattr(spec, key)
        if value is not None and len(value) != 3:
            raise ModelError(
                f"model {name!r}: {key} has {len(value)} values {list(value)}; give one per RGB channel"
            )
    model = skeleton(spec)
    size = spec.input_size or input_size
    maps = {row.name for row in layer_table(model, size)}
    for layer in layers:
        resolve_layer(model, layer, name)
        if layer not in maps:
            raise ModelError(
                f"model {name!r}: layer {layer!r} gives no 4-D (batch, units, h, w) feature maps on a "
                f"{size}x{size} input; dissect a convolutional layer (cnnscope layers lists them)"
            )
    try:
        output_count(spec, size, model)
    except ModelError as e:
        raise ModelError(f"model {name!r}: {e}; its forward must return the logits tensor alone") from e
