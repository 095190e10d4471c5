"""Models: a registry of builders (torchvision, local checkpoints, built-in CNNs) and layer lookup."""

from cnnscope.models.layers import resolve_layer
from cnnscope.models.registry import LoadedModel, ModelSpec, load_model

__all__ = ["LoadedModel", "ModelSpec", "load_model", "resolve_layer"]
