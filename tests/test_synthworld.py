"""The synthetic world is written in Broden's exact format, with every concept category."""

from __future__ import annotations

import csv
import filecmp

import numpy as np
from PIL import Image

from cnnscope.data import render
from cnnscope.data.broden import BrodenDataset
from cnnscope.data.synthworld import INDEX_COLUMNS, WorldSpec, generate


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_files_and_columns_follow_broden(world):
    with open(world / "index.csv") as f:
        assert f.readline().strip().split(",") == list(INDEX_COLUMNS)
    assert [r["name"] for r in _rows(world / "category.csv")] == [
        "color",
        "object",
        "part",
        "material",
        "scene",
        "texture",
    ]
    with open(world / "label.csv") as f:
        assert f.readline().strip() == "number,name,category,frequency,coverage,syns"
    for cat in ("color", "object", "part", "material", "scene", "texture"):
        with open(world / f"c_{cat}.csv") as f:
            assert f.readline().strip() == "code,number,name,frequency,coverage"


def test_vocabulary_sizes_meet_the_spec():
    assert len(render.OBJECTS) >= 16 and len(render.PARTS) >= 4
    assert len(render.MATERIALS) >= 4 and len(render.TEXTURES) >= 10 and len(render.SCENES) >= 4
    assert render.COLOR_NAMES == (
        "black",
        "blue",
        "brown",
        "green",
        "grey",
        "orange",
        "pink",
        "purple",
        "red",
        "white",
        "yellow",
    )


def test_masks_are_half_resolution_and_decode_to_known_labels(world):
    ds = BrodenDataset(world)
    seen_cats = set()
    for i, r in enumerate(ds.records):
        assert (r.ih, r.iw, r.sh, r.sw) == (32, 32, 16, 16)
        img = ds.image(i)
        assert img.shape == (32, 32, 3)
        for cat, files in r.masks.items():
            for f in files:
                m = ds.mask(i, f)
                assert m.shape == (16, 16)
                labels = set(np.unique(m).tolist()) - {0}
                assert labels <= set(ds.labels), f"unknown labels in {f}"
                assert all(cat in ds.labels[n].categories for n in labels)
                seen_cats.add(cat)
        for cat, nums in r.scalars.items():
            assert all(cat in ds.labels[n].categories for n in nums)
            seen_cats |= {cat} if nums else set()
    assert seen_cats == {"color", "object", "part", "material", "scene", "texture"}
    assert ds.pixel_categories == ("color", "object", "part", "material")
    assert ds.image_categories == ("scene", "texture")


def test_multi_category_label_and_primary_category(world):
    rows = {r["name"]: r for r in _rows(world / "label.csv")}
    assert rows["chequered"]["category"].startswith("material(")
    assert ";texture(" in rows["chequered"]["category"]
    ds = BrodenDataset(world)
    cheq = next(lb for lb in ds.labels.values() if lb.name == "chequered")
    cov = {
        c: float(r["coverage"])
        for c in ("material", "texture")
        for r in _rows(world / f"c_{c}.csv")
        if r["name"] == "chequered"
    }
    assert cheq.primary == max(cov, key=cov.get)
    assert set(cheq.categories) == {"material", "texture"}


def test_primary_category_follows_largest_coverage(world, tmp_path):
    """Editing c_texture.csv so chequered covers more as a texture flips its primary category."""
    import shutil

    copy = tmp_path / "w"
    shutil.copytree(world, copy)
    rows = _rows(copy / "c_texture.csv")
    for r in rows:
        if r["name"] == "chequered":
            r["coverage"] = "99999"
    with open(copy / "c_texture.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    cheq = next(lb for lb in BrodenDataset(copy).labels.values() if lb.name == "chequered")
    assert cheq.primary == "texture"


def test_label_encoding_uses_red_plus_256_green(world):
    ds = BrodenDataset(world)
    i = next(i for i, r in enumerate(ds.records) if r.masks["object"])
    f = ds.records[i].masks["object"][0]
    rgb = np.asarray(Image.open(world / "images" / f).convert("RGB")).astype(int)
    assert np.array_equal(ds.mask(i, f), rgb[..., 0] + 256 * rgb[..., 1])


def test_generation_is_deterministic(tmp_path):
    a, b, c = (tmp_path / n for n in "abc")
    generate(a, WorldSpec(n_images=8, image_size=32, seed=1), progress=False)
    generate(b, WorldSpec(n_images=8, image_size=32, seed=1), progress=False)
    generate(c, WorldSpec(n_images=8, image_size=32, seed=2), progress=False)
    assert filecmp.cmp(a / "index.csv", b / "index.csv", shallow=False)
    same = [
        filecmp.cmp(a / "images/synth/000003.jpg", x / "images/synth/000003.jpg", shallow=False)
        for x in (b, c)
    ]
    assert same == [True, False]
