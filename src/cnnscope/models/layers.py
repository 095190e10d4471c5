"""Addressing layers by dotted module name (``layer4``, ``features.10``, ``layer3.1.conv2``), and
running a model in eval mode for a while."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

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


@contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode for the block, then in the mode it was in, even after an error: every
    method that runs a model for its own ends leaves it as it found it."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
