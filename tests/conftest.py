"""Shared fixtures: a small synthetic world on disk and its packed form."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnnscope.data.broden import BrodenDataset
from cnnscope.data.packed import PackedDataset, pack
from cnnscope.data.synthworld import WorldSpec, generate

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("world") / "synthworld"
    generate(root, WorldSpec(n_images=60, image_size=32, seed=3), progress=False)
    return root


@pytest.fixture(scope="session")
def packed(world, tmp_path_factory) -> PackedDataset:
    out = tmp_path_factory.mktemp("packed")
    pack(BrodenDataset(world), out, progress=False)
    return PackedDataset.open(out)
