"""Step ``synthworld``: generate the synthetic probe world in Broden's format."""

from __future__ import annotations

from dataclasses import dataclass, field

from cnnscope.data.synthworld import WorldSpec, generate
from cnnscope.stepkit.runner import Output, run_step
from cnnscope.stepkit.schema import Step, register


@dataclass
class Config(Step):
    world: WorldSpec = field(default_factory=WorldSpec)


register("synthworld", Config)


def body(cfg: Config) -> None:
    spec, out = cfg.world, Output(cfg)
    with out.write() as tmp:
        generate(tmp, spec, progress=cfg.progress)
    out.done("%d images of %dpx", spec.n_images, spec.image_size)


if __name__ == "__main__":
    run_step("synthworld", body)
