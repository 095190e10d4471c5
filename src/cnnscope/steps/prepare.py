"""Step ``prepare``: pack a Broden-format dataset once into memory-mapped arrays."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from omegaconf import MISSING

from cnnscope.bounds import positive
from cnnscope.data.broden import BrodenDataset
from cnnscope.data.packed import pack
from cnnscope.io import atomic_dir, verify_if_sealed, write_yaml
from cnnscope.steps.runner import run_step
from cnnscope.steps.schema import Threaded, register

log = logging.getLogger("cnnscope")


@dataclass
class Config(Threaded):
    dataset_dir: str = MISSING
    threads: int = positive(2)  # decoding processes


register("prepare", Config)


def body(cfg: dict) -> None:
    verify_if_sealed(cfg["dataset_dir"], "synthworld or download")
    dataset = BrodenDataset(cfg["dataset_dir"])
    with atomic_dir(cfg["out"]) as tmp:
        pack(dataset, tmp, workers=cfg["threads"], progress=cfg["progress"])
        write_yaml(tmp / "config.yaml", cfg)
    log.info(
        "prepare: packed %d images, %d labels from %s into %s",
        len(dataset),
        len(dataset.labels),
        cfg["dataset_dir"],
        cfg["out"],
    )


if __name__ == "__main__":
    run_step("prepare", body)
