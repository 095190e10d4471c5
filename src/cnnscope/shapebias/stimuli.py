"""Reading stimulus folders in the layout of ``rgeirhos/texture-vs-shape``.

* cue conflict: ``<root>/<shape>/<shape><i>-<texture><j>.png``, 80 images per shape class, 5 of them
  with shape == texture class (1280 images, 1200 conflict trials);
* edges and filled silhouettes: ``<root>/<class>/<class><n>.png``.

A folder with missing classes or files that do not follow the naming fails with the file named.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnscope.data.rgb import read_rgb
from cnnscope.errors import DatasetError
from cnnscope.shapebias.classes import CLASSES

# The three stimulus sets, relative to the root of a texture-vs-shape checkout (or the world's copy).
STIMULUS_DIRS = {
    "cue-conflict": "stimuli/style-transfer-preprocessed-512",
    "edges": "stimuli/edges",
    "silhouettes": "stimuli/filled-silhouettes",
}
_CONFLICT = re.compile(r"^(?P<shape>[a-z]+)(?P<i>\d+)-(?P<texture>[a-z]+)(?P<j>\d+)\.png$")
_SINGLE = re.compile(r"^(?P<cls>[a-z]+)(?P<n>\d+)\.png$")


@dataclass(frozen=True)
class Stimulus:
    path: Path
    shape: str  # the true class for edges and silhouettes
    texture: str | None  # None outside cue conflict

    @property
    def conflict(self) -> bool:
        return self.texture is not None and self.texture != self.shape


def _class_dirs(root: Path, classes: Sequence[str]) -> list[Path]:
    if not root.is_dir():
        raise DatasetError(f"stimulus folder {root} does not exist; run the stimuli step or fix it")
    missing = [c for c in classes if not (root / c).is_dir()]
    if missing:
        raise DatasetError(f"stimulus folder {root} lacks class folder(s): {', '.join(missing)}")
    return [root / c for c in classes]


def cue_conflict(root: str | Path, classes: Sequence[str] = CLASSES) -> list[Stimulus]:
    """All cue-conflict stimuli of ``root``, sorted by shape class then file name."""
    out = []
    for d in _class_dirs(Path(root), classes):
        for f in sorted(d.glob("*.png")):
            m = _CONFLICT.match(f.name)
            if not m or m["shape"] != d.name or m["texture"] not in classes:
                raise DatasetError(
                    f"{f} does not follow <shape><i>-<texture><j>.png with shape {d.name!r} and a "
                    "texture among the classes"
                )
            out.append(Stimulus(f, m["shape"], m["texture"]))
    if not out:
        raise DatasetError(f"stimulus folder {root} holds no PNG files")
    return out


def single_cue(root: str | Path, classes: Sequence[str] = CLASSES) -> list[Stimulus]:
    """Edge or silhouette stimuli of ``root`` (one class per image)."""
    out = []
    for d in _class_dirs(Path(root), classes):
        for f in sorted(d.glob("*.png")):
            m = _SINGLE.match(f.name)
            if not m or m["cls"] != d.name:
                raise DatasetError(f"{f} does not follow <class><n>.png with class {d.name!r}")
            out.append(Stimulus(f, d.name, None))
    return out


def load_rgb(stimuli: list[Stimulus]) -> np.ndarray:
    """The images as ``uint8 (N, H, W, 3)`` at their native size (all must share one size)."""
    arrays = []
    for s in stimuli:
        arrays.append(np.asarray(read_rgb(s.path)))
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise DatasetError(f"stimuli have several sizes {sorted(shapes)}; they must share one")
    return np.stack(arrays)


def stimulus_sets(root: str | Path, classes: Sequence[str] = CLASSES) -> dict[str, list[Stimulus]]:
    """The cue-conflict, edge and silhouette sets of a texture-vs-shape layout at ``root``."""
    root = Path(root)
    return {
        name: (cue_conflict if name == "cue-conflict" else single_cue)(root / sub, classes)
        for name, sub in STIMULUS_DIRS.items()
    }
