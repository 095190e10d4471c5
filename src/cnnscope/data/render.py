"""Procedural drawing for the synthetic world: shapes, parts, materials, colours, scenes, textures.

Everything is drawn with vectorised numpy on a pixel grid from an explicit ``numpy.random.Generator``,
so a seed fixes every image. The vocabulary mirrors Broden's six concept categories:

* object   -- 16 filled shapes at random position, scale and rotation;
* part     -- sub-regions of each object (rim/core by distance to the edge, top/bottom in the
              object's own frame), written as two overlapping part masks as Broden does;
* material -- the fill of an object (metal, wood, fabric, stone, chequered);
* color    -- Broden's 11 colour names, labelled per pixel by the nearest colour prototype;
* scene    -- the image-level background (sky, meadow, desert, sea, indoor);
* texture  -- image-level whole-image swatches like DTD's (11 patterns).

``chequered`` is both a texture and a material, as some Broden labels belong to several categories.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from matplotlib.path import Path as MplPath

OBJECTS: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "cross",
    "hexagon",
    "ellipse",
    "diamond",
    "heart",
    "ring",
    "crescent",
    "arrow",
    "pentagon",
    "trapezoid",
    "ell",
    "tee",
)
PARTS: tuple[str, ...] = ("rim", "core", "top", "bottom")
MATERIALS: tuple[str, ...] = ("metal", "wood", "fabric", "stone", "chequered")
SCENES: tuple[str, ...] = ("sky", "meadow", "desert", "sea", "indoor")
TEXTURES: tuple[str, ...] = (
    "striped",
    "dotted",
    "chequered",
    "zigzagged",
    "grid",
    "wavy",
    "crosshatched",
    "spiralled",
    "marbled",
    "banded",
    "lined",
)
# Broden's 11 colour names with RGB prototypes (the colour terms of the Broden color category).
COLORS: dict[str, tuple[int, int, int]] = {
    "black": (20, 20, 20),
    "blue": (40, 70, 200),
    "brown": (120, 72, 35),
    "green": (50, 150, 50),
    "grey": (128, 128, 128),
    "orange": (240, 140, 20),
    "pink": (240, 150, 190),
    "purple": (120, 50, 150),
    "red": (200, 30, 30),
    "white": (235, 235, 235),
    "yellow": (235, 215, 40),
}
COLOR_NAMES: tuple[str, ...] = tuple(COLORS)
_PROTOS = np.array(list(COLORS.values()), dtype=np.float32)


@dataclass(frozen=True)
class Frame:
    """A pixel grid with the object's own coordinates ``u, v`` in [-1, 1] (rotated and scaled)."""

    u: np.ndarray
    v: np.ndarray


def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [0, 1): ``x`` to the right, ``y`` downwards."""
    c = (np.arange(size, dtype=np.float32) + 0.5) / size
    return np.meshgrid(c, c, indexing="xy")


def object_frame(size: int, cx: float, cy: float, scale: float, angle: float) -> Frame:
    x, y = grid(size)
    dx, dy = (x - cx) / scale, (y - cy) / scale
    ca, sa = np.cos(angle), np.sin(angle)
    return Frame(u=ca * dx + sa * dy, v=-sa * dx + ca * dy)


def random_frame(
    rng: np.random.Generator, size: int, center: tuple[float, float], scale: tuple[float, float]
) -> Frame:
    """An object frame at a uniformly random centre (both coordinates in ``center``), scale and
    rotation: how every world places its objects."""
    return object_frame(
        size,
        cx=rng.uniform(*center),
        cy=rng.uniform(*center),
        scale=rng.uniform(*scale),
        angle=rng.uniform(0, 2 * np.pi),
    )


def _polygon(points: np.ndarray) -> Callable[[Frame], np.ndarray]:
    path = MplPath(points)

    def inside(f: Frame) -> np.ndarray:
        pts = np.stack([f.u.ravel(), f.v.ravel()], axis=1)
        return path.contains_points(pts).reshape(f.u.shape)

    return inside


def _regular(n: int, radius: float, phase: float = -np.pi / 2) -> np.ndarray:
    t = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([radius * np.cos(t), radius * np.sin(t)], axis=1)


def _star() -> np.ndarray:
    outer, inner = _regular(5, 0.95), _regular(5, 0.4, phase=-np.pi / 2 + np.pi / 5)
    return np.stack([outer, inner], axis=1).reshape(-1, 2)


_ARROW = np.array(
    [[-0.9, -0.22], [0.2, -0.22], [0.2, -0.6], [0.9, 0.0], [0.2, 0.6], [0.2, 0.22], [-0.9, 0.22]]
)
SHAPES: dict[str, Callable[[Frame], np.ndarray]] = {
    "circle": lambda f: f.u**2 + f.v**2 <= 0.8**2,
    "square": lambda f: np.maximum(np.abs(f.u), np.abs(f.v)) <= 0.68,
    "triangle": _polygon(_regular(3, 0.95)),
    "star": _polygon(_star()),
    "cross": lambda f: (
        ((np.abs(f.u) < 0.27) & (np.abs(f.v) < 0.85)) | ((np.abs(f.v) < 0.27) & (np.abs(f.u) < 0.85))
    ),
    "hexagon": _polygon(_regular(6, 0.85, phase=0.0)),
    "ellipse": lambda f: (f.u / 0.95) ** 2 + (f.v / 0.5) ** 2 <= 1.0,
    "diamond": lambda f: np.abs(f.u) / 0.6 + np.abs(f.v) / 0.95 <= 1.0,
    "heart": lambda f: (
        ((f.u / 0.8) ** 2 + (-f.v / 0.8 + 0.25) ** 2 - 1) ** 3 - (f.u / 0.8) ** 2 * (-f.v / 0.8 + 0.25) ** 3
        <= 0
    ),
    "ring": lambda f: (f.u**2 + f.v**2 <= 0.9**2) & (f.u**2 + f.v**2 >= 0.5**2),
    "crescent": lambda f: (f.u**2 + f.v**2 <= 0.85**2) & ((f.u - 0.4) ** 2 + f.v**2 > 0.65**2),
    "arrow": _polygon(_ARROW),
    "pentagon": _polygon(_regular(5, 0.9)),
    "trapezoid": _polygon(np.array([[-0.9, 0.55], [0.9, 0.55], [0.45, -0.55], [-0.45, -0.55]])),
    "ell": lambda f: (
        ((np.abs(f.u + 0.45) < 0.3) & (np.abs(f.v) < 0.85))
        | ((np.abs(f.v - 0.55) < 0.3) & (np.abs(f.u) < 0.75))
    ),
    "tee": lambda f: (
        ((np.abs(f.u) < 0.25) & (f.v > -0.45) & (f.v < 0.9))
        | ((np.abs(f.v + 0.62) < 0.25) & (np.abs(f.u) < 0.85))
    ),
}


def erode(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary erosion with a (2r+1)^2 square, by shifting: the rim of a part is mask & ~erode(mask)."""
    out = mask.copy()
    padded = np.pad(mask, radius, constant_values=False)
    h, w = mask.shape
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            out &= padded[dy : dy + h, dx : dx + w]
    return out


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Value noise in [0, 1]: a coarse random grid, bilinearly upsampled (smooth blotches)."""
    coarse = rng.random((cells + 1, cells + 1)).astype(np.float32)
    t = np.linspace(0, cells, size, dtype=np.float32)
    i = np.minimum(t.astype(int), cells - 1)
    f = t - i
    rows = coarse[i] * (1 - f)[:, None] + coarse[i + 1] * f[:, None]
    return rows[:, i] * (1 - f)[None, :] + rows[:, i + 1] * f[None, :]


def _mix(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    return a[None, None, :] * (1 - t[..., None]) + b[None, None, :] * t[..., None]


def texture_pattern(name: str, rng: np.random.Generator, size: int, freq: float | None = None) -> np.ndarray:
    """A texture's intensity pattern in [0, 1], drawn in image coordinates with random phase.

    ``freq`` is in cycles per image side (random in [4, 7] when not given).
    """
    x, y = grid(size)
    freq = rng.uniform(4.0, 7.0) if freq is None else freq
    ph = rng.uniform(0, 2 * np.pi)
    ang = rng.uniform(0, np.pi)
    xr = np.cos(ang) * x + np.sin(ang) * y
    yr = -np.sin(ang) * x + np.cos(ang) * y
    s = 2 * np.pi * freq
    if name == "striped":
        return (np.sin(s * xr + ph) > 0).astype(np.float32)
    if name == "dotted":
        cell = ((np.sin(s * x + ph) * np.sin(s * y + ph)) > 0.55).astype(np.float32)
        return cell
    if name == "chequered":
        return ((np.sin(s * xr + ph) * np.sin(s * yr + ph)) > 0).astype(np.float32)
    if name == "zigzagged":
        tri = np.abs(((freq * xr * 2) % 2) - 1)
        return (np.sin(s * (yr + 0.08 * tri) + ph) > 0).astype(np.float32)
    if name == "grid":
        return ((np.abs(np.sin(s * x + ph)) < 0.25) | (np.abs(np.sin(s * y + ph)) < 0.25)).astype(np.float32)
    if name == "wavy":
        return (np.sin(s * (yr + 0.05 * np.sin(2 * np.pi * 3 * xr)) + ph) > 0).astype(np.float32)
    if name == "crosshatched":
        a = np.abs(np.sin(s * (x + y) / 1.4 + ph)) < 0.3
        b = np.abs(np.sin(s * (x - y) / 1.4 + ph)) < 0.3
        return (a | b).astype(np.float32)
    if name == "spiralled":
        cx, cy = rng.uniform(0.3, 0.7, size=2)
        r = np.hypot(x - cx, y - cy)
        th = np.arctan2(y - cy, x - cx)
        return (np.sin(s * r * 1.2 + 3 * th + ph) > 0).astype(np.float32)
    if name == "marbled":
        n = smooth_noise(rng, size, 4) + 0.5 * smooth_noise(rng, size, 8)
        return (0.5 + 0.5 * np.sin(2 * np.pi * (3 * xr + 2.5 * n))).astype(np.float32)
    if name == "banded":
        return (np.sin(2 * np.pi * rng.uniform(1.5, 2.5) * yr + ph) > 0).astype(np.float32)
    if name == "lined":
        return (np.abs(np.sin(s * 1.3 * xr + ph)) < 0.2).astype(np.float32)
    raise ValueError(f"unknown texture {name!r}; known: {', '.join(TEXTURES)}")


def material_fill(
    name: str, rng: np.random.Generator, frame: Frame, base: np.ndarray, size: int
) -> np.ndarray:
    """The RGB of an object's fill: its base colour modulated by the material's pattern."""
    u, v = frame.u, frame.v
    if name == "metal":
        shade = 0.75 + 0.35 * np.clip(0.5 - 0.5 * (u + v), 0, 1)
        highlight = np.exp(-((u + 0.3) ** 2 + (v + 0.3) ** 2) / 0.05)
        rgb = base[None, None, :] * shade[..., None] + 60 * highlight[..., None]
    elif name == "wood":
        rings = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * np.hypot(u - 0.9, v) + rng.uniform(0, 6))
        rgb = base[None, None, :] * (0.7 + 0.3 * rings)[..., None]
    elif name == "fabric":
        weave = 0.5 + 0.5 * np.sign(np.sin(2 * np.pi * 6 * u) * np.sin(2 * np.pi * 6 * v))
        rgb = base[None, None, :] * (0.78 + 0.22 * weave)[..., None]
    elif name == "stone":
        n = smooth_noise(rng, size, 10)
        rgb = base[None, None, :] * (0.7 + 0.45 * n)[..., None]
    elif name == "chequered":
        check = (np.sin(2 * np.pi * 3 * u) * np.sin(2 * np.pi * 3 * v) > 0).astype(np.float32)
        rgb = _mix(base, np.full(3, 235.0, np.float32), check * 0.8)
    else:
        raise ValueError(f"unknown material {name!r}; known: {', '.join(MATERIALS)}")
    return np.clip(rgb, 0, 255)


def scene_background(name: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """The RGB background of a scene: each scene has its own palette and layout."""
    x, y = grid(size)
    noise = smooth_noise(rng, size, 6)
    if name == "sky":
        rgb = _mix(np.array([90, 140, 230.0]), np.array([215, 230, 250.0]), y + 0.2 * noise - 0.1)
    elif name == "meadow":
        rgb = _mix(np.array([40, 120, 40.0]), np.array([110, 180, 60.0]), noise)
    elif name == "desert":
        dunes = 0.5 + 0.5 * np.sin(2 * np.pi * (2 * y + 0.3 * np.sin(2 * np.pi * x)))
        rgb = _mix(np.array([200, 160, 90.0]), np.array([235, 205, 130.0]), 0.6 * dunes + 0.4 * noise)
    elif name == "sea":
        waves = 0.5 + 0.5 * np.sin(2 * np.pi * (6 * y + 0.5 * noise))
        rgb = _mix(np.array([20, 60, 140.0]), np.array([60, 120, 200.0]), waves)
    elif name == "indoor":
        horizon = rng.uniform(0.55, 0.75)
        wall = _mix(np.array([170, 165, 160.0]), np.array([200, 195, 185.0]), noise)
        floor = _mix(np.array([110, 70, 40.0]), np.array([140, 95, 55.0]), noise)
        rgb = np.where((y > horizon)[..., None], floor, wall)
    else:
        raise ValueError(f"unknown scene {name!r}; known: {', '.join(SCENES)}")
    return np.clip(rgb, 0, 255).astype(np.float32)


def color_labels(rgb: np.ndarray) -> np.ndarray:
    """Per-pixel index into :data:`COLOR_NAMES` of the nearest colour prototype."""
    d = ((rgb[..., None, :].astype(np.float32) - _PROTOS) ** 2).sum(-1)
    return d.argmin(-1)


def texture_swatch(
    name: str, rng: np.random.Generator, size: int, colors: tuple[str, str], freq: float | None = None
) -> np.ndarray:
    """A whole-image texture swatch in two of the colour prototypes (``freq``: see texture_pattern)."""
    pat = texture_pattern(name, rng, size, freq)
    a, b = (np.array(COLORS[c], dtype=np.float32) for c in colors)
    return _mix(a, b, pat)
