"""Reading stimulus folders in the layout of ``rgeirhos/texture-vs-shape``.

* cue conflict: ``<root>/<shape>/<shape><i>-<texture><j>.png``, 80 images per shape class, 5 of them
  with shape == texture class (1280 images, 1200 conflict trials);
* the single-cue types of the paper's Fig. 2 (original, greyscale, filled silhouette, edges, texture):
  ``<root>/<class>/<class><n>.png``.

The repository ships the cue-conflict, edge and silhouette images only (the others' permissions did
not allow it), so a real checkout must hold those three and the others are evaluated where a folder
holds them; the world writes all six. A folder with missing classes or files that do not follow the
naming fails with the file named.
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


@dataclass(frozen=True)
class StimulusSet:
    """One stimulus type: its folder below a texture-vs-shape root, the name of its experiment in the
    published raw data (``<experiment>-experiment_<subj>_session_<k>.csv``), and whether the
    repository ships its images (then a real checkout must hold it)."""

    folder: str
    experiment: str
    published: bool


# The stimulus types of Geirhos et al. (2019), the five single-cue types of Fig. 2 in its order, then
# cue conflict; keyed by cnnscope's name for them (its decision files' names).
STIMULUS_SETS: dict[str, StimulusSet] = {
    "original": StimulusSet("stimuli/original", "original", False),
    "greyscale": StimulusSet("stimuli/greyscale", "grayscale", False),
    "silhouettes": StimulusSet("stimuli/filled-silhouettes", "silhouette-filled", True),
    "edges": StimulusSet("stimuli/edges", "edge", True),
    "texture": StimulusSet("stimuli/texture", "texture", False),
    "cue-conflict": StimulusSet("stimuli/style-transfer-preprocessed-512", "style-transfer-512-nomask", True),
}
CONFLICT_SET = "cue-conflict"
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
    """Every stimulus type of the texture-vs-shape layout at ``root``: the published three always (a
    missing one fails), the others where their folder exists."""
    root = Path(root)
    return {
        name: (cue_conflict if name == CONFLICT_SET else single_cue)(root / s.folder, classes)
        for name, s in STIMULUS_SETS.items()
        if s.published or (root / s.folder).is_dir()
    }
