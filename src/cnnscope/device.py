"""Which torch device a step runs on."""

from __future__ import annotations

import torch

from cnnscope.errors import CnnscopeError


def pick_device(requested: str = "auto") -> torch.device:
    """``auto`` -> the GPU when there is one, else the CPU; a GPU asked for must be there."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CnnscopeError(f"device={requested} but no GPU is visible: use device=auto or device=cpu")
    return device
