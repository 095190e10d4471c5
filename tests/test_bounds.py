"""Typed, bounded settings: ranges and Enums refuse bad values with the valid ones, before any work."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from test_steps import _step

from cnnscope.bounds import Range, bounded, check, choice, positive
from cnnscope.errors import CnnscopeError

Color = choice("Color", ("red", "gradcam++"))


@dataclass
class Inner:
    n: int = positive(1)


@dataclass
class Outer:
    q: float = bounded(0.5, 0, 1, open_lo=True, open_hi=True)
    xs: list[float] = field(default_factory=list, metadata={"range": Range(0, None)})
    device: str = bounded("auto", pattern=r"auto|cpu")
    inner: Inner = field(default_factory=Inner)
    color: Color = Color.red


@pytest.mark.parametrize(
    "values,message",
    [
        ({"q": 0.0}, r"q=0.0 is out of range: it must lie in \(0, 1\)"),
        ({"q": 1.0}, r"q=1.0 is out of range"),
        ({"q": float("nan")}, r"q=nan is not a finite number"),
        ({"xs": [1.0, -2.0]}, r"xs=-2.0 is out of range: it must lie in \[0, inf\)"),
        ({"device": "gpu"}, r"device='gpu' is not valid: it must match auto\|cpu"),
        ({"inner": {"n": 0}}, r"inner.n=0 is out of range: it must lie in \[1, inf\)"),
    ],
)
def test_out_of_range_values_are_refused_naming_the_range(values, message):
    with pytest.raises(CnnscopeError, match=message):
        check(Outer, values)


def test_values_in_range_pass_including_the_bounds_that_are_closed():
    check(Outer, {"q": 0.999, "xs": [0.0, 3.0], "device": "cpu", "inner": {"n": 1}, "color": "gradcam++"})
    assert Range(0, 1).holds(0) and Range(0, 1).holds(1) and not Range(0, 1, lo_open=True).holds(0)


def test_a_choice_is_an_enum_of_its_values_and_compares_as_text():
    assert [c.value for c in Color] == ["red", "gradcam++"] and Color["gradcam++"] == "gradcam++"


@pytest.mark.parametrize(
    "args,message",
    [
        (["batch_size=-5"], "batch_size=-5 is out of range: it must lie in [0, inf)"),
        (["quantile=1.5"], "quantile=1.5 is out of range: it must lie in (0, 1)"),
        (["detector_iou=-1"], "detector_iou=-1.0 is out of range: it must lie in [0, 1)"),
        (["device=gpu"], "device='gpu' is not valid"),
        (["iou_mode=strict"], "Invalid value 'strict', expected one of [paper, lite]"),
    ],
)
def test_a_step_refuses_a_bad_setting_before_any_work(tmp_path, args, message):
    res = _step("dissect", "activations=a", "packed=p", "out=o", *args, cwd=tmp_path)
    assert message in res.stdout + res.stderr, res.stdout + res.stderr
    assert res.returncode == (1 if "Invalid value" in message else 2)  # Hydra's own exit for an Enum
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_attribution_method_lists_the_valid_ones(tmp_path):
    res = _step(
        "attribution", "name=m", "packed=p", "layer=conv5", "out=o", "methods=[gradcam,sharp]", cwd=tmp_path
    )
    assert res.returncode != 0
    assert "Invalid value 'sharp', expected one of [cam, gradcam, gradcam++" in res.stderr
