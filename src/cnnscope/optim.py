"""SGD with momentum and Adam, written out for the few parameters of a probe (Net2Vec's embeddings).

``torch.optim``'s constructors import ``torch._dynamo`` (1.6 s per process on the default study's
machine), which is more than a Net2Vec job spends training on the default study. These follow
``torch.optim.SGD`` and ``torch.optim.Adam`` (L2 ``weight_decay`` added to the gradient, no dampening,
no Nesterov, no AMSGrad) step for step; ``tests/test_optim.py`` compares them with torch's.
"""

from __future__ import annotations

import math

import torch

OPTIMIZERS = ("sgd", "adam")


class Optimizer:
    """Updates ``params`` in place from their ``.grad``; :meth:`state_dict` holds all it carries."""

    def __init__(
        self,
        params: list[torch.Tensor],
        kind: str,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        if kind not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {kind!r}; use one of {', '.join(OPTIMIZERS)}")
        self.params, self.kind, self.lr = params, kind, lr
        self.momentum, self.weight_decay, self.betas, self.eps = momentum, weight_decay, betas, eps
        self.steps = 0
        self.first = [torch.zeros_like(p) for p in params]  # SGD's momentum buffer, Adam's mean
        self.second = [torch.zeros_like(p) for p in params]  # Adam's mean square

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.steps += 1
        b1, b2 = self.betas
        for p, m, v in zip(self.params, self.first, self.second, strict=True):
            g = p.grad if not self.weight_decay else p.grad.add(p, alpha=self.weight_decay)
            if self.kind == "sgd":
                if self.steps == 1 or not self.momentum:
                    m.copy_(g)
                else:
                    m.mul_(self.momentum).add_(g)
                p.add_(m, alpha=-self.lr)
                continue
            m.lerp_(g, 1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = (v.sqrt() / math.sqrt(1 - b2**self.steps)).add_(self.eps)
            p.addcdiv_(m, denom, value=-self.lr / (1 - b1**self.steps))

    def state_dict(self) -> dict:
        return {
            "steps": self.steps,
            "first": [m.cpu().clone() for m in self.first],
            "second": [v.cpu().clone() for v in self.second],
        }

    def load_state_dict(self, state: dict) -> None:
        self.steps = state["steps"]
        for dst, src in zip(self.first + self.second, state["first"] + state["second"], strict=True):
            dst.copy_(src)
