"""Step ``stimuli``: the cue-conflict, edge and silhouette sets, built in or real."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from cnnscope.data import shapetexture
from cnnscope.data.download import fetch, unpack
from cnnscope.errors import CnnscopeError
from cnnscope.io import atomic_dir, write_yaml
from cnnscope.shapebias.stimuli import STIMULUS_DIRS, stimulus_sets
from cnnscope.steps.runner import run_step

log = logging.getLogger("cnnscope")


def _copy_checkout(src: Path, dest: Path) -> None:
    """Copy the stimulus folders and raw data of a texture-vs-shape checkout."""
    for sub in [*STIMULUS_DIRS.values(), "raw-data"]:
        if not (src / sub).is_dir():
            raise CnnscopeError(f"{src} is not a texture-vs-shape checkout: {src / sub} is missing")
        shutil.copytree(src / sub, dest / sub)


def body(cfg: dict) -> None:
    out, source = Path(cfg["out"]), cfg["source"]
    if source == "download":
        archive = Path(cfg["cache_dir"]) / "texture-vs-shape.zip"
        if not archive.exists():
            fetch(cfg["url"], archive, None, cfg["sha256"], cfg["timeout_s"], cfg["retries"], cfg["progress"])
        unpack(archive, out, progress=cfg["progress"], marker="stimuli")
        stimulus_sets(out)  # all 16 classes, every file named as published
        write_yaml(out / "config.yaml", cfg)
    elif source in ("world", "local"):
        with atomic_dir(out) as tmp:
            if source == "world":
                w = cfg["world"]
                shapetexture.write_stimuli(
                    tmp, w["size"], w["seed"], w["poses"], w["singles"], cfg["progress"]
                )
            else:
                if not cfg["path"]:
                    raise CnnscopeError("source=local needs path=<a texture-vs-shape checkout>")
                _copy_checkout(Path(cfg["path"]), tmp)
                stimulus_sets(tmp)
            write_yaml(tmp / "config.yaml", cfg)
    else:
        raise CnnscopeError(f"stimuli source={source!r}; use world, download or local")
    log.info("stimuli: %s stimuli in %s", source, out)


if __name__ == "__main__":
    run_step("stimuli", body)
