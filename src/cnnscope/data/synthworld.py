"""The synthetic world: a procedurally drawn probe dataset written in Broden's exact on-disk format.

Because it is byte-for-byte the same format as ``broden1_224`` (``index.csv``, ``category.csv``,
``label.csv``, ``c_<category>.csv``, JPEG images and R + 256*G label PNGs at half resolution), the one
Broden loader reads both, and every later stage is exercised offline exactly as on the real data.

Its 16 object shapes are those of the shape/texture world (:mod:`cnnscope.data.shapetexture`) that
the default study's models are trained on, so their shape detectors have concepts to match.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from cnnscope.bounds import bounded, positive
from cnnscope.data import render
from cnnscope.progress import track

PIXEL_CATEGORIES = ("color", "object", "part", "material")
IMAGE_CATEGORIES = ("scene", "texture")
CATEGORIES = ("color", "object", "part", "material", "scene", "texture")
INDEX_COLUMNS = ("image", "split", "ih", "iw", "sh", "sw", *CATEGORIES)


@dataclass
class WorldSpec:
    """What to generate. Defaults fit the offline default study's time budget on 2 CPU cores.

    Also the schema of the synthworld step's ``world`` config (so the two cannot drift apart).
    """

    n_images: int = positive(480)
    image_size: int = bounded(64, 8, multiple_of=2)  # masks are at half resolution
    seed: int = bounded(0, 0)
    texture_fraction: float = bounded(0.2, 0, 1)
    two_object_fraction: float = bounded(0.3, 0, 1)
    val_fraction: float = bounded(0.2, 0, 1, open_hi=True)


class LabelSpace:
    """Global Broden label numbers (1-based; 0 means unlabelled) for every (category, name).

    A name that occurs in two categories (``chequered``: texture and material) gets one number, as
    Broden labels may belong to several categories.
    """

    def __init__(self) -> None:
        vocab = {
            "color": render.COLOR_NAMES,
            "object": render.OBJECTS,
            "part": render.PARTS,
            "material": render.MATERIALS,
            "scene": render.SCENES,
            "texture": render.TEXTURES,
        }
        self.number: dict[str, int] = {}
        self.by_category: dict[str, list[str]] = {}
        for cat in CATEGORIES:
            self.by_category[cat] = list(vocab[cat])
            for name in vocab[cat]:
                self.number.setdefault(name, len(self.number) + 1)
        self.name = {n: name for name, n in self.number.items()}

    def lut(self, category: str) -> np.ndarray:
        """Maps a category-local index (0-based, -1 for none) to a global label number."""
        nums = [self.number[n] for n in self.by_category[category]]
        return np.array([*nums, 0], dtype=np.uint16)  # index -1 -> 0


@dataclass
class Drawing:
    """One rendered image with its per-pixel and image-level concept labels (category-local ids)."""

    rgb: np.ndarray
    pixel: dict[str, list[np.ndarray]] = field(default_factory=dict)
    image: dict[str, list[int]] = field(default_factory=dict)


def _draw_objects(rng: np.random.Generator, size: int, canvas: np.ndarray, n_objects: int) -> Drawing:
    obj = np.full((size, size), -1, np.int16)
    rim_core = np.full((size, size), -1, np.int16)
    top_bot = np.full((size, size), -1, np.int16)
    mat = np.full((size, size), -1, np.int16)
    rim_px = max(1, size // 24)
    for _ in range(n_objects):
        s = int(rng.integers(len(render.OBJECTS)))
        m = int(rng.integers(len(render.MATERIALS)))
        color = render.COLOR_NAMES[int(rng.integers(len(render.COLOR_NAMES)))]
        frame = render.random_frame(rng, size, center=(0.3, 0.7), scale=(0.22, 0.34))
        inside = render.SHAPES[render.OBJECTS[s]](frame)
        if not inside.any():
            continue
        base = np.array(render.COLORS[color], dtype=np.float32)
        fill = render.material_fill(render.MATERIALS[m], rng, frame, base, size)
        canvas[inside] = fill[inside]
        core = render.erode(inside, rim_px)
        obj[inside] = s
        mat[inside] = m
        rim_core[inside] = np.where(core[inside], 1, 0)  # PARTS: rim=0, core=1
        top_bot[inside] = np.where(frame.v[inside] < 0, 2, 3)  # top=2, bottom=3
    return Drawing(
        rgb=canvas,
        pixel={"object": [obj], "part": [rim_core, top_bot], "material": [mat]},
    )


def object_sample(rng: np.random.Generator, size: int, n_objects: int = 1) -> Drawing:
    """An object image: a scene background with ``n_objects`` random shapes."""
    scene = int(rng.integers(len(render.SCENES)))
    canvas = render.scene_background(render.SCENES[scene], rng, size)
    d = _draw_objects(rng, size, canvas, n_objects)
    d.image["scene"] = [scene]
    d.pixel["color"] = [render.color_labels(d.rgb)]
    return d


def texture_sample(rng: np.random.Generator, size: int) -> Drawing:
    """A whole-image texture swatch (image-level texture label, like a DTD image)."""
    t = int(rng.integers(len(render.TEXTURES)))
    c1, c2 = rng.choice(len(render.COLOR_NAMES), size=2, replace=False)
    rgb = render.texture_swatch(
        render.TEXTURES[t], rng, size, (render.COLOR_NAMES[c1], render.COLOR_NAMES[c2])
    )
    return Drawing(rgb=rgb, pixel={"color": [render.color_labels(rgb)]}, image={"texture": [t]})


def _save_mask(path: Path, labels: np.ndarray) -> None:
    """Write global label numbers as an RGB PNG with label = R + 256 * G (Broden's encoding)."""
    rgb = np.zeros((*labels.shape, 3), np.uint8)
    rgb[..., 0] = labels % 256
    rgb[..., 1] = labels // 256
    Image.fromarray(rgb).save(path)


def generate(root: str | Path, spec: WorldSpec | None = None, progress: bool = True) -> Path:
    """Draw ``spec.n_images`` images and write them, with all label files, in Broden format."""
    spec = spec or WorldSpec()
    root = Path(root)
    (root / "images" / "synth").mkdir(parents=True, exist_ok=True)
    labels = LabelSpace()
    luts = {c: labels.lut(c) for c in CATEGORIES}
    rng = np.random.default_rng(spec.seed)
    size, msize = spec.image_size, spec.image_size // 2
    freq: dict[tuple[str, int], int] = defaultdict(int)
    cover: dict[tuple[str, int], float] = defaultdict(float)
    cat_freq: dict[str, int] = defaultdict(int)
    rows = []
    for i in track(range(spec.n_images), "synthworld", enabled=progress):
        if rng.random() < spec.texture_fraction:
            d = texture_sample(rng, size)
        else:
            n_obj = 2 if rng.random() < spec.two_object_fraction else 1
            d = object_sample(rng, size, n_objects=n_obj)
        stem = f"synth/{i:06d}"
        Image.fromarray(d.rgb.round().astype(np.uint8)).save(root / "images" / f"{stem}.jpg", quality=95)
        row = {
            "image": f"{stem}.jpg",
            "split": "val" if rng.random() < spec.val_fraction else "train",
            "ih": size,
            "iw": size,
            "sh": msize,
            "sw": msize,
        }
        for cat in PIXEL_CATEGORIES:
            files = []
            present: set[int] = set()
            for j, local in enumerate(d.pixel.get(cat, [])):
                glob = luts[cat][local[::2, ::2]]
                if not glob.any():
                    continue
                suffix = cat if len(d.pixel[cat]) == 1 else f"{cat}_{j + 1}"
                fname = f"{stem}_{suffix}.png"
                _save_mask(root / "images" / fname, glob)
                files.append(fname)
                nums, counts = np.unique(glob[glob > 0], return_counts=True)
                for n, c in zip(nums.tolist(), counts.tolist(), strict=True):
                    cover[(cat, n)] += c / glob.size
                    present.add(n)
            for n in present:
                freq[(cat, n)] += 1
            cat_freq[cat] += bool(files)
            row[cat] = ";".join(files)
        for cat in IMAGE_CATEGORIES:
            nums = [int(luts[cat][k]) for k in d.image.get(cat, [])]
            for n in nums:
                freq[(cat, n)] += 1
                cover[(cat, n)] += 1.0
            cat_freq[cat] += bool(nums)
            row[cat] = ";".join(map(str, nums))
        rows.append(row)
    _write_tables(root, rows, labels, freq, cover, cat_freq)
    return root


def _write_tables(
    root: Path,
    rows: list[dict],
    labels: LabelSpace,
    freq: dict[tuple[str, int], int],
    cover: dict[tuple[str, int], float],
    cat_freq: dict[str, int],
) -> None:
    with open(root / "index.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=INDEX_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    with open(root / "category.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "first", "last", "count", "frequency"])
        for cat in CATEGORIES:
            n = len(labels.by_category[cat])
            w.writerow([cat, 1, n, n, cat_freq[cat]])
    for cat in CATEGORIES:
        with open(root / f"c_{cat}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["code", "number", "name", "frequency", "coverage"])
            for code, name in enumerate(labels.by_category[cat], start=1):
                n = labels.number[name]
                w.writerow([code, n, name, freq[(cat, n)], f"{cover[(cat, n)]:.6f}"])
    with open(root / "label.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["number", "name", "category", "frequency", "coverage", "syns"])
        for n in sorted(labels.name):
            name = labels.name[n]
            cats = [c for c in CATEGORIES if name in labels.by_category[c]]
            catfield = ";".join(f"{c}({freq[(c, n)]})" for c in cats)
            total_f = sum(freq[(c, n)] for c in cats)
            total_c = sum(cover[(c, n)] for c in cats)
            w.writerow([n, name, catfield, total_f, f"{total_c:.6f}", ""])
