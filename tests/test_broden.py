"""The Broden loader and packer: decoding, and clear errors on bad input."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from cnnscope.data.broden import BrodenDataset
from cnnscope.data.packed import PackedDataset, pack
from cnnscope.errors import DatasetError


def test_packed_arrays_equal_decoded_files(world, packed):
    ds = BrodenDataset(world)
    assert len(packed) == len(ds) == 60
    cats = packed.meta["layer_categories"]
    for i in (0, 7, 31, 59):
        assert np.array_equal(packed.images[i], ds.image(i))
        r = ds.records[i]
        for c in ds.pixel_categories:
            start = cats.index(c)
            for j in range(cats.count(c)):
                want = ds.mask(i, r.masks[c][j]) if j < len(r.masks[c]) else np.zeros((16, 16))
                assert np.array_equal(packed.masks[i, start + j], want)
        scal = sorted(v for c in ds.categories for v in r.scalars[c])
        assert sorted(x for x in packed.scalars[i] if x) == scal


def test_label_category_table(packed):
    cat = packed.label_category()
    names = packed.label_names()
    assert cat[0] == -1 and names[0] == "-"
    assert packed.categories[cat[names.index("red")]] == "color"
    assert packed.categories[cat[names.index("star")]] == "object"
    assert packed.categories[cat[names.index("sky")]] == "scene"


def test_missing_directory_names_it(tmp_path):
    with pytest.raises(DatasetError, match="nowhere.*does not exist"):
        BrodenDataset(tmp_path / "nowhere")


def test_malformed_index_names_the_column(world, tmp_path):
    copy = tmp_path / "w"
    shutil.copytree(world, copy)
    text = (copy / "index.csv").read_text().replace("image,split", "picture,split", 1)
    (copy / "index.csv").write_text(text)
    with pytest.raises(DatasetError, match=r"index\.csv is malformed: missing column\(s\) image"):
        BrodenDataset(copy)


def test_missing_mask_names_the_file_and_packs_nothing(world, tmp_path):
    copy = tmp_path / "w"
    shutil.copytree(world, copy)
    ds = BrodenDataset(copy)
    victim = ds.records[5].masks["color"][0]
    (copy / "images" / victim).unlink()
    from cnnscope.io import atomic_dir

    out = tmp_path / "packed"
    with pytest.raises(DatasetError, match=victim.replace(".", r"\.")), atomic_dir(out) as tmp:
        pack(ds, tmp, progress=False)
    assert not out.exists()
    assert list(tmp_path.glob(".packed.tmp-*")) == []


def test_unreadable_mask_is_reported(world, tmp_path):
    copy = tmp_path / "w"
    shutil.copytree(world, copy)
    ds = BrodenDataset(copy)
    victim = ds.records[2].masks["color"][0]
    (copy / "images" / victim).write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="unreadable"):
        ds.mask(2, victim)


def test_unpacked_directory_is_refused(tmp_path):
    with pytest.raises(DatasetError, match="run the prepare step"):
        PackedDataset.open(tmp_path)
