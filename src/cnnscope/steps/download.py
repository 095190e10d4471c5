"""Step ``download``: fetch (resumably), verify and unpack a real Broden release."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import MISSING

from cnnscope.bounds import bounded, choice
from cnnscope.data.broden import BrodenDataset
from cnnscope.data.download import MD5, SHA256, Fetching, fetch, unpack
from cnnscope.errors import DownloadError
from cnnscope.stepkit.runner import Output, run_step
from cnnscope.stepkit.schema import Step, register

DatasetSource = choice("DatasetSource", ("broden", "synthworld"))


@dataclass
class DatasetConfig:
    """A probe dataset (``config/dataset/``): the synthetic world, or a real Broden release to download."""

    name: str = MISSING
    source: DatasetSource = DatasetSource.broden
    url: str | None = None
    sha256: str | None = bounded(None, pattern=SHA256)  # expected archive digest, when known
    md5: str | None = bounded(None, pattern=MD5)  # an MD5 pin where only that is published
    size_bytes: int | None = bounded(None, 1)  # expected archive size, when known


@dataclass
class Config(Step, Fetching):
    dataset: DatasetConfig = MISSING


register("download", Config, dataset="broden1_224")


def body(cfg: Config) -> None:
    ds = cfg.dataset
    if ds.source != "broden" or not ds.url:
        raise DownloadError(f"dataset {ds.name!r} has no download URL (source={ds.source})")
    archive = fetch(
        ds.url,
        Path(cfg.cache_dir) / f"{ds.name}.zip",
        ds.size_bytes,
        ds.sha256,
        cfg.timeout_s,
        cfg.retries,
        cfg.progress,
        ds.md5,
    )
    out = Output(cfg)
    # A dataset folder: its config is download.yaml, not to be taken for one of the release's files.
    with out.write(config_file="download.yaml") as tmp:
        unpack(archive, tmp, progress=cfg.progress, max_ratio=cfg.max_unpack_ratio)
        BrodenDataset(tmp)  # refuse (loudly) anything the loader cannot read
    out.done("%s unpacked (archive kept at %s)", ds.name, archive)


if __name__ == "__main__":
    run_step("download", body)
