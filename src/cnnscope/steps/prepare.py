"""Step ``prepare``: pack a Broden-format dataset once into memory-mapped arrays."""

from __future__ import annotations

import logging

from cnnscope.data.broden import BrodenDataset
from cnnscope.data.packed import pack
from cnnscope.io import atomic_dir, write_yaml
from cnnscope.steps.runner import run_step

log = logging.getLogger("cnnscope")


def body(cfg: dict) -> None:
    dataset = BrodenDataset(cfg["dataset_dir"])
    with atomic_dir(cfg["out"]) as tmp:
        pack(dataset, tmp, workers=cfg["workers"], progress=cfg["progress"])
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
