"""Addressing layers by dotted module name (``layer4``, ``features.10``, ``layer3.1.conv2``)."""

from __future__ import annotations

from torch import nn

from cnnscope.errors import ModelError


def layer_names(model: nn.Module) -> list[str]:
    """Every addressable (non-root) module name of ``model``, in definition order."""
    return [name for name, _ in model.named_modules() if name]


def resolve_layer(model: nn.Module, name: str, model_name: str = "model") -> nn.Module:
    """The module called ``name``; an unknown name fails at once and lists the valid ones."""
    modules = dict(model.named_modules())
    if not name or name not in modules:
        valid = layer_names(model)
        raise ModelError(
            f"unknown layer {name!r} for {model_name}. Valid layers ({len(valid)}): " + ", ".join(valid)
        )
    return modules[name]
