"""Step ``prepare``: pack a Broden-format dataset once into memory-mapped arrays."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING

from cnnscope.bounds import positive
from cnnscope.data.broden import BrodenDataset
from cnnscope.data.packed import pack
from cnnscope.io import verify_if_sealed
from cnnscope.stepkit.runner import Output, run_step
from cnnscope.stepkit.schema import Threaded, register


@dataclass
class Config(Threaded):
    dataset_dir: str = MISSING
    threads: int = positive(2)  # decoding processes


register("prepare", Config)


def body(cfg: Config) -> None:
    verify_if_sealed(cfg.dataset_dir, "synthworld or download")
    dataset = BrodenDataset(cfg.dataset_dir)
    out = Output(cfg)
    with out.write() as tmp:
        pack(dataset, tmp, workers=cfg.threads, progress=cfg.progress)
    out.done("packed %d images, %d labels from %s", len(dataset), len(dataset.labels), cfg.dataset_dir)


if __name__ == "__main__":
    run_step("prepare", body)
