"""The shape/texture world: 16 shape classes, each with its own texture, where both cues are ours.

An image is one object of shape class ``k`` at random position, scale and rotation on a plain or
smooth-noise grey background, filled with a texture. Each class owns one texture: a pattern, a
frequency and a colour pair (colour is part of the texture cue). ``agreement`` sets how often the fill
is the class's own texture rather than a random class's:

* ``standard`` regime (``agreement=0.9``): texture is a shortcut, as on ImageNet;
* ``shape`` regime (``agreement=None``: every fill drawn uniformly from the 16): only shape predicts
  the class, the analogue of training on Stylized-ImageNet.

Stimuli for the cue-conflict evaluation are written in the layout of ``rgeirhos/texture-vs-shape``
(``stimuli/style-transfer-preprocessed-512/<shape>/<shape><i>-<texture><j>.png``, 80 per shape class
of which 5 have shape == texture; the single-cue types with ``<class>/<class><n>.png``), so the same
loader and analyses serve the real and the built-in sets. The single-cue types are those of Geirhos et
al.'s Fig. 2: original (the object in its own texture on a background, as trained), greyscale (the
originals' luminance), filled silhouette, edges (the silhouette's outline) and texture (the class's
texture over the whole image, no shape); the paper showed 10 images per class of each, 3 of texture.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from cnnscope.data import render
from cnnscope.progress import track
from cnnscope.shapebias.distortions import greyscale, to_uint8_rgb
from cnnscope.shapebias.stimuli import STIMULUS_SETS

CLASSES: tuple[str, ...] = render.OBJECTS
# One texture per class: (pattern, cycles per image side, colour pair).
TEXTURES: tuple[tuple[str, float, tuple[str, str]], ...] = (
    ("striped", 7.0, ("red", "white")),
    ("dotted", 6.0, ("blue", "yellow")),
    ("chequered", 5.0, ("black", "orange")),
    ("zigzagged", 6.0, ("green", "pink")),
    ("grid", 6.0, ("purple", "white")),
    ("wavy", 7.0, ("brown", "yellow")),
    ("crosshatched", 6.0, ("blue", "white")),
    ("spiralled", 5.0, ("red", "black")),
    ("marbled", 4.0, ("green", "white")),
    ("banded", 3.0, ("orange", "blue")),
    ("lined", 6.0, ("pink", "black")),
    ("striped", 4.0, ("yellow", "purple")),
    ("dotted", 8.0, ("red", "green")),
    ("chequered", 8.0, ("white", "brown")),
    ("zigzagged", 4.0, ("blue", "orange")),
    ("wavy", 4.0, ("black", "pink")),
)
REGIMES: dict[str, float | None] = {"standard": 0.9, "shape": None}
WORLD = "world"  # a step's ``data`` value for images of this world (else an image folder)


def texture_fill(k: int, rng: np.random.Generator, size: int) -> np.ndarray:
    """Class ``k``'s texture over the whole image (random phase and orientation)."""
    pattern, freq, colors = TEXTURES[k]
    return render.texture_swatch(pattern, rng, size, colors, freq)


def background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A plain or smooth-noise grey background: it carries no shape or texture cue."""
    level = rng.uniform(90, 200)
    noise = render.smooth_noise(rng, size, 4) if rng.random() < 0.5 else np.zeros((size, size))
    grey = np.clip(level + 50 * (noise - 0.5), 0, 255).astype(np.float32)
    return np.repeat(grey[..., None], 3, axis=2)


# Where objects lie: ranges of the centre's coordinates and of the scale (fractions of the image).
# ``trained``: every set the models learn from and are tested on; ``anywhere``: smaller objects at any
# position, so that the image's centre is no longer a good guess of where the object is (the pointing
# game's centre baseline hits 95% of the trained placement's objects).
PLACEMENTS: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "trained": ((0.35, 0.65), (0.28, 0.4)),
    "anywhere": ((0.2, 0.8), (0.2, 0.28)),
}


def shape_mask(k: int, rng: np.random.Generator, size: int, placement: str = "trained") -> np.ndarray:
    """Where class ``k``'s object lies, at a random position, scale and rotation."""
    center, scale = PLACEMENTS[placement]
    frame = render.random_frame(rng, size, center=center, scale=scale)
    return render.SHAPES[CLASSES[k]](frame)


def draw(rng: np.random.Generator, size: int, shape: int, texture: int) -> np.ndarray:
    """One object of class ``shape`` filled with class ``texture``'s texture, ``uint8 (H, W, 3)``."""
    canvas = background(rng, size)
    inside = shape_mask(shape, rng, size)
    canvas[inside] = texture_fill(texture, rng, size)[inside]
    return canvas.round().astype(np.uint8)


def localisation_set(
    n: int, size: int, seed: int, placement: str = "trained"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` originals (each object in its own class's texture, classes balanced, placed as
    ``placement`` says) with what a localisation score needs: images ``uint8 (n, H, W, 3)``, labels
    ``(n,)`` and the object's mask ``bool (n, H, W)``, exact by construction."""
    rng = np.random.default_rng([seed, 2, list(PLACEMENTS).index(placement)])  # streams of their own
    images = np.empty((n, size, size, 3), np.uint8)
    masks = np.empty((n, size, size), bool)
    labels = np.arange(n) % len(CLASSES)
    for i, k in enumerate(labels):
        canvas = background(rng, size)
        masks[i] = shape_mask(int(k), rng, size, placement)
        canvas[masks[i]] = texture_fill(int(k), rng, size)[masks[i]]
        images[i] = canvas.round().astype(np.uint8)
    return images, labels.astype(np.int64), masks


def silhouette(inside: np.ndarray) -> np.ndarray:
    """A filled silhouette, ``uint8 (H, W, 3)``: the object dark on white, as the silhouette stimuli."""
    return np.where(inside[..., None], 20, 245).astype(np.uint8).repeat(3, axis=2)


def concept_sets(n: int, size: int, seed: int) -> dict[str, np.ndarray]:
    """The world's concepts as image sets for TCAV (Kim et al. 2018), ``n`` images each: every class's
    texture over the whole image (``texture:<class>``: the texture stimuli) and its shape as a filled
    silhouette at the trained placements (``shape:<class>``: the silhouette stimuli), each concept from a
    stream of its own."""
    out = {}
    for k, name in enumerate(CLASSES):
        rng = np.random.default_rng([seed, 3, k])
        out[f"texture:{name}"] = np.stack(
            [texture_fill(k, rng, size).round().astype(np.uint8) for _ in range(n)]
        )
        out[f"shape:{name}"] = np.stack([silhouette(shape_mask(k, rng, size)) for _ in range(n)])
    return out


def random_sets(count: int, n: int, size: int, seed: int, stream: int = 0) -> list[np.ndarray]:
    """``count`` sets of ``n`` random images of the world for TCAV: objects of random shape in random
    texture (``training_set`` with no agreement), each set from a stream of its own (``stream``: one
    family of sets, e.g. the counterparts apart from the stand-ins)."""
    return [training_set(n, size, None, [seed, 4, stream, r])[0] for r in range(count)]


def training_set(
    n: int, size: int, agreement: float | None, seed: int | list[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` images with balanced shape classes; returns images, shape labels, texture labels."""
    rng = np.random.default_rng(seed)
    shapes = np.arange(n) % len(CLASSES)
    rng.shuffle(shapes)
    if agreement is None:
        textures = rng.integers(len(CLASSES), size=n)
    else:
        other = (shapes + rng.integers(1, len(CLASSES), size=n)) % len(CLASSES)
        textures = np.where(rng.random(n) < agreement, shapes, other)
    images = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        images[i] = draw(rng, size, int(shapes[i]), int(textures[i]))
    return images, shapes.astype(np.int64), textures.astype(np.int64)


def _save(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


def write_stimuli(
    root: str | Path,
    size: int = 64,
    seed: int = 0,
    poses: int = 5,
    singles: int = 10,
    textures: int = 3,
    progress: bool = True,
) -> Path:
    """Write every stimulus type in the real stimuli's layout: ``poses`` cue-conflict poses per shape,
    ``singles`` originals (and their greyscale), silhouettes and edges per class, ``textures`` texture
    images per class."""
    root = Path(root)
    folder = {name: root / s.folder for name, s in STIMULUS_SETS.items()}
    rng = np.random.default_rng(seed)
    for s, shape in enumerate(track(CLASSES, "cue-conflict stimuli", enabled=progress)):
        for i in range(1, poses + 1):
            pose_seed = int(rng.integers(2**31))
            for t, texture in enumerate(CLASSES):
                # The same pose of shape s under every texture: only the texture differs.
                pose = np.random.default_rng(pose_seed)
                canvas = background(pose, size)
                inside = shape_mask(s, pose, size)
                canvas[inside] = texture_fill(t, rng, size)[inside]
                _save(
                    folder["cue-conflict"] / shape / f"{shape}{i}-{texture}{i}.png",
                    canvas.round().astype(np.uint8),
                )
    for kind in ("edges", "silhouettes"):
        for s, shape in enumerate(CLASSES):
            for n in range(1, singles + 1):
                inside = shape_mask(s, rng, size)
                if kind == "edges":
                    inside = inside & ~render.erode(inside, max(1, size // 48))
                image = silhouette(inside)
                _save(folder[kind] / shape / f"{shape}{n}.png", image)
    # The types added later draw from a stream of their own, so the sets above keep their bytes.
    rng = np.random.default_rng([seed, 1])
    for k, shape in enumerate(CLASSES):
        for n in range(1, singles + 1):
            image = draw(rng, size, k, k)
            _save(folder["original"] / shape / f"{shape}{n}.png", image)
            _save(folder["greyscale"] / shape / f"{shape}{n}.png", to_uint8_rgb(greyscale(image)))
        for n in range(1, textures + 1):
            _save(
                folder["texture"] / shape / f"{shape}{n}.png",
                texture_fill(k, rng, size).round().astype(np.uint8),
            )
    return root
