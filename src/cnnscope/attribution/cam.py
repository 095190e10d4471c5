"""Class-activation maps: each method is only its channel weights (see :mod:`.base`)."""

from __future__ import annotations

import torch
from torch import nn

from cnnscope.attribution.base import LayerAttribution
from cnnscope.errors import ModelError


class CAM(LayerAttribution):
    """Zhou et al. 2016: the weights of the target class in a global-average-pooling + linear head.

    ``head`` names the linear layer (default: the model's last ``nn.Linear``). The head is checked
    on every batch: the logits must equal ``head(mean over positions of the layer)``.
    """

    def __init__(self, model: nn.Module, layer: str, head: str | None = None) -> None:
        super().__init__(model, layer)
        linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        if head is None and not linears:
            raise ModelError(
                f"CAM needs a linear head after global average pooling; {type(model).__name__} has none"
            )
        self.head = dict(model.named_modules())[head] if head else linears[-1][1]

    def weights(self, acts, grads, logits, targets):
        fits = acts.shape[1] == self.head.in_features
        if not fits or not torch.allclose(self.head(acts.mean((2, 3))), logits, rtol=1e-3, atol=1e-4):
            raise ModelError(
                f"CAM needs the logits to be a linear function of the global average of "
                f"{self.layer_name!r}; they are not for this model (use Grad-CAM instead)"
            )
        return self.head.weight[targets]


class GradCAM(LayerAttribution):
    """Selvaraju et al. 2017: channel weights are the spatially averaged gradients."""

    def weights(self, acts, grads, logits, targets):
        return grads.mean((2, 3))


class CounterfactualGradCAM(LayerAttribution):
    """Grad-CAM with negated gradients: regions whose removal would raise the target's score."""

    def weights(self, acts, grads, logits, targets):
        return -grads.mean((2, 3))


class GradCAMPlusPlus(LayerAttribution):
    """Chattopadhyay et al. 2018, closed form with the exponential-score simplification:
    ``alpha = g^2 / (2 g^2 + sum_ab(A) g^3)`` and ``w_c = sum_ij alpha_ij relu(g_ij)``."""

    def weights(self, acts, grads, logits, targets):
        g2, g3 = grads.pow(2), grads.pow(3)
        denom = 2 * g2 + acts.sum((2, 3), keepdim=True) * g3
        alpha = torch.where(grads != 0, g2 / torch.where(denom != 0, denom, torch.ones_like(denom)), 0.0)
        return (alpha * grads.clamp(min=0)).sum((2, 3))
