"""Step ``stimuli``: the stimulus types of Geirhos et al. (2019), built in or real."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from cnnscope.bounds import bounded, choice, positive
from cnnscope.data import shapetexture
from cnnscope.data.download import SHA256, Fetching, fetch, unpack
from cnnscope.errors import CnnscopeError
from cnnscope.shapebias.stimuli import STIMULUS_SETS, stimulus_sets
from cnnscope.stepkit.runner import Output, run_step
from cnnscope.stepkit.schema import Step, register

StimuliSource = choice("StimuliSource", ("world", "download", "local"))


@dataclass
class WorldStimuli:
    """The built-in shape/texture world's stimulus sets (cnnscope.data.shapetexture)."""

    size: int = bounded(64, 8)
    seed: int = bounded(0, 0)
    poses: int = positive(5)  # cue-conflict images per (shape, texture) pair
    singles: int = positive(10)  # original, greyscale, silhouette and edge images per class
    textures: int = positive(3)  # texture-only images per class


@dataclass
class Config(Step, Fetching):
    source: StimuliSource = StimuliSource.world
    world: WorldStimuli = field(default_factory=WorldStimuli)
    # rgeirhos/texture-vs-shape pinned to one commit, with the archive's size and SHA-256 as published
    # in TensorFlow Datasets' checksums for geirhos_conflict_stimuli.
    url: str = (
        "https://github.com/rgeirhos/texture-vs-shape/archive/1b69c6a445c3348927139edb30a5134521fd4b03.zip"
    )
    size_bytes: int | None = bounded(161433700, 1)
    sha256: str | None = bounded(
        "378f255b2089c3d6f1df53a9a3b29fa74a91d58e60d983f55b91d76eadaaffe3", pattern=SHA256
    )
    path: str | None = None  # a local texture-vs-shape checkout (source=local)


register("stimuli", Config)


def _copy_checkout(src: Path, dest: Path) -> None:
    """Copy the stimulus folders (the published ones must be there) and raw data of a texture-vs-shape
    checkout."""
    for sub in [*(s.folder for s in STIMULUS_SETS.values() if s.published), "raw-data"]:
        if not (src / sub).is_dir():
            raise CnnscopeError(f"{src} is not a texture-vs-shape checkout: {src / sub} is missing")
    for sub in [*(s.folder for s in STIMULUS_SETS.values()), "raw-data"]:
        if (src / sub).is_dir():
            shutil.copytree(src / sub, dest / sub)


def body(cfg: Config) -> None:
    source = cfg.source
    if source == "local" and not cfg.path:
        raise CnnscopeError("source=local needs path=<a texture-vs-shape checkout>")
    if source == "download":
        archive = fetch(
            cfg.url,
            Path(cfg.cache_dir) / f"texture-vs-shape-{cfg.sha256 or 'unpinned'}.zip",
            cfg.size_bytes,
            cfg.sha256,
            cfg.timeout_s,
            cfg.retries,
            cfg.progress,
        )
    out = Output(cfg)
    with out.write() as tmp:
        if source == "world":
            w = cfg.world
            shapetexture.write_stimuli(tmp, w.size, w.seed, w.poses, w.singles, w.textures, cfg.progress)
        elif source == "download":
            unpack(archive, tmp, progress=cfg.progress, marker="stimuli", max_ratio=cfg.max_unpack_ratio)
        else:
            _copy_checkout(Path(cfg.path), tmp)
        if source != "world":
            stimulus_sets(tmp)  # the published types, all 16 classes, every file named as published
    out.done("%s stimuli", source)


if __name__ == "__main__":
    run_step("stimuli", body)
