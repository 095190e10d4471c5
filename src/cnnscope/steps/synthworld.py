"""Step ``synthworld``: generate the synthetic probe world in Broden's format."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from cnnscope.data.synthworld import WorldSpec, generate
from cnnscope.io import atomic_dir, write_yaml
from cnnscope.steps.runner import run_step
from cnnscope.steps.schema import Step, register

log = logging.getLogger("cnnscope")


@dataclass
class Config(Step):
    world: WorldSpec = field(default_factory=WorldSpec)


register("synthworld", Config)


def body(cfg: dict) -> None:
    spec = WorldSpec(**cfg["world"])
    with atomic_dir(cfg["out"]) as tmp:
        generate(tmp, spec, progress=cfg["progress"])
        write_yaml(tmp / "config.yaml", cfg)
    log.info("synthworld: %d images of %dpx written to %s", spec.n_images, spec.image_size, cfg["out"])


if __name__ == "__main__":
    run_step("synthworld", body)
