"""cnnscope.optim against torch.optim, step for step."""

from __future__ import annotations

import pytest
import torch

from cnnscope.optim import Optimizer


@pytest.mark.parametrize(
    "kind, kw",
    [
        ("sgd", {"lr": 0.3, "momentum": 0.9}),
        ("sgd", {"lr": 0.1, "momentum": 0.0, "weight_decay": 0.01}),
        ("adam", {"lr": 0.05}),
        ("adam", {"lr": 0.01, "weight_decay": 0.1}),
    ],
)
def test_matches_torch_optim(kind, kw):
    torch.manual_seed(0)
    target = torch.randn(5, 3)
    ours = [torch.randn(5, 3, requires_grad=True), torch.randn(5, requires_grad=True)]
    theirs = [p.detach().clone().requires_grad_(True) for p in ours]
    opt = Optimizer(ours, kind, **kw)
    ref = (torch.optim.SGD if kind == "sgd" else torch.optim.Adam)(theirs, **kw)
    for _ in range(25):
        for params, o in ((ours, opt), (theirs, ref)):
            o.zero_grad()
            loss = ((params[0] - target) ** 2).sum() + (params[1] ** 2 * params[0][:, 0].tanh()).sum()
            loss.backward()
            o.step()
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not torch.equal(ours[0], theirs[0].new_zeros(5, 3))


def test_state_round_trip_continues_identically():
    torch.manual_seed(1)
    a = [torch.randn(4, requires_grad=True)]
    opt = Optimizer(a, "adam", lr=0.1)

    def step(params, o):
        o.zero_grad()
        (params[0] ** 2).sum().backward()
        o.step()

    for _ in range(3):
        step(a, opt)
    b = [a[0].detach().clone().requires_grad_(True)]
    resumed = Optimizer(b, "adam", lr=0.1)
    resumed.load_state_dict(opt.state_dict())
    for _ in range(3):
        step(a, opt)
        step(b, resumed)
    assert torch.equal(a[0], b[0])


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown optimizer"):
        Optimizer([torch.zeros(1)], "lbfgs", lr=1.0)
