"""``cnnscope.explain``: a researcher's own images -> the study's attribution maps, overlays and a page."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from cnnscope.attribution.perturbation import SIDUParams
from cnnscope.attribution.suite import DISPLAY_NAMES, METHODS, TRAINED, MethodParams, attribute
from cnnscope.errors import CnnscopeError
from cnnscope.explain import explain, load_images, overlay
from cnnscope.features import LayerCapture
from cnnscope.models.builtin import BUILTIN
from cnnscope.models.registry import LoadedModel

UNTRAINED = [m for m in METHODS if m not in TRAINED]  # L-CAM needs a study's trained attention
LAYER = "conv5"  # the built-in ConvNet's last conv block, before global average pooling
SIZE = 64
# The untrained model's conv5 activations stay below 0.07: SIDU's masks start lower than its 0.5.
PARAMS = MethodParams(sidu=SIDUParams(threshold=0.01))


@pytest.fixture
def loaded() -> LoadedModel:
    torch.manual_seed(0)
    return LoadedModel(BUILTIN["convnet"](width=8, num_classes=4).eval(), (0.5,) * 3, (0.25,) * 3)


def _write(path: Path, width: int, height: int, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def images(tmp_path) -> list[Path]:
    return [
        _write(tmp_path / "in" / "cat.png", 80, 50, 1),
        _write(tmp_path / "in" / "dog.jpg", 40, 90, 2),
        _write(tmp_path / "in" / "my bird's nest.png", 64, 64, 3),
    ]


def _sources(page: str) -> set[str]:
    return {unquote(s) for s in re.findall(r"src='([^']*)'", page)}


def test_display_names_cover_every_method():
    assert set(DISPLAY_NAMES) == set(METHODS)
    assert len(set(DISPLAY_NAMES.values())) == len(DISPLAY_NAMES)


def test_writes_page_maps_and_an_overlay_per_image_and_method(loaded, images, tmp_path):
    out = explain(
        loaded,
        LAYER,
        images,
        list(UNTRAINED),
        tmp_path / "out",
        SIZE,
        class_names=list("wxyz"),
        params=PARAMS,
    )
    assert out == tmp_path / "out"
    maps = np.load(out / "maps.npz")
    assert set(maps.files) == set(UNTRAINED)
    for m in UNTRAINED:
        assert maps[m].dtype == np.float32 and maps[m].shape == (3, SIZE, SIZE)
        assert maps[m].min() >= 0 and maps[m].max() <= 1
    stems = ["cat", "dog", "my bird's nest"]
    overlays = {f"overlays/{s}__{m}.png" for s in stems for m in UNTRAINED}
    assert {str(p.relative_to(out)) for p in (out / "overlays").iterdir()} == overlays
    for name in overlays:
        assert Image.open(out / name).size == (SIZE, SIZE)
    page = (out / "index.html").read_text()
    sources = _sources(page)
    assert overlays | {f"{d}/{s}.png" for s in stems for d in ("inputs", "profiles")} == sources
    assert all((out / s).is_file() for s in sources)
    headings = re.findall(r"<th>([^<]*)</th>", page)
    assert headings == ["image", "input", *(DISPLAY_NAMES[m] for m in UNTRAINED), "response profile"]
    assert "my bird&#x27;s nest" in page  # file names are escaped, not pasted into the HTML
    rows = pd.read_csv(out / "predictions.csv")
    assert rows["image"].tolist() == [str(p) for p in images]
    assert rows["predicted_name"].tolist() == ["wxyz"[i] for i in rows["predicted"]]
    assert (rows["explained"] == rows["predicted"]).all()


@pytest.mark.parametrize(("target", "batch_size"), [(None, 16), (2, 2)])
def test_maps_are_what_the_attribution_step_computes(loaded, images, tmp_path, target, batch_size):
    out = explain(
        loaded, LAYER, images, list(UNTRAINED), tmp_path / "out", SIZE, None, target, batch_size, PARAMS
    )
    x = loaded.normalize(torch.from_numpy(load_images(images, SIZE)))
    with torch.no_grad():
        probs = loaded.module(x).softmax(1)
    targets = probs.argmax(1) if target is None else torch.full((3,), target)
    # the same batches as explain's: a batch's size changes the kernels' rounding, not the result
    batches = [
        attribute(
            loaded.module,
            LAYER,
            x[i : i + batch_size],
            list(UNTRAINED),
            targets[i : i + batch_size],
            params=PARAMS,
        )[0]
        for i in range(0, len(x), batch_size)
    ]
    maps = np.load(out / "maps.npz")
    for m in UNTRAINED:
        want = torch.cat([b[m] for b in batches]).numpy()
        np.testing.assert_allclose(maps[m], want, atol=1e-6, err_msg=m)
    rows = pd.read_csv(out / "predictions.csv")
    assert rows["predicted"].tolist() == probs.argmax(1).tolist()
    np.testing.assert_allclose(rows["probability"], probs.max(1).values.numpy(), atol=1e-6)
    assert rows["explained"].tolist() == targets.tolist()
    np.testing.assert_allclose(rows["explained_probability"], probs[range(3), targets].numpy(), atol=1e-6)


def test_response_profiles_are_the_layers_mean_activations_named_by_labels(loaded, images, tmp_path):
    """Each image's mean activation per unit of the layer, ranked, and labelled when labels are given."""
    x = loaded.normalize(torch.from_numpy(load_images(images, SIZE)))
    with torch.no_grad(), LayerCapture(loaded.module.conv5) as cap:
        want = cap(loaded.module, x).mean((2, 3)).numpy()  # (3, units), by a hook of its own
    labels = [f"concept{u}" for u in range(want.shape[1])]
    out = explain(
        loaded, LAYER, images, ["gradcam"], tmp_path / "out", SIZE, batch_size=2, unit_labels=labels
    )
    table = pd.read_csv(out / "responses.csv")
    assert len(table) == want.size and table["image"].unique().tolist() == ["cat", "dog", "my bird's nest"]
    np.testing.assert_allclose(table["mean_activation"].to_numpy().reshape(want.shape), want, rtol=1e-5)
    top = table[table["rank"] == 1]
    assert top["unit"].tolist() == want.argmax(1).tolist()
    assert top["label"].tolist() == [labels[u] for u in want.argmax(1)]
    assert sorted(table.groupby("image")["rank"].apply(sorted).iloc[0]) == list(range(1, want.shape[1] + 1))
    assert all(Image.open(out / "profiles" / f"{s}.png").size[0] > 300 for s in table["image"].unique())
    before = set(tmp_path.iterdir())
    with pytest.raises(
        CnnscopeError, match=f"3 unit labels given, but layer 'conv5' .* has {want.shape[1]} units"
    ):
        explain(loaded, LAYER, images, ["gradcam"], tmp_path / "again", SIZE, unit_labels=labels[:3])
    assert set(tmp_path.iterdir()) == before


@pytest.mark.parametrize("portrait", [False, True])
def test_load_images_resizes_the_short_side_and_crops_the_centre(tmp_path, portrait):
    # 300x200: green outer bands (cropped away), red left and blue right of the centre line.
    pixels = np.zeros((200, 300, 3), np.uint8)
    pixels[:, :40] = pixels[:, 260:] = (0, 255, 0)
    pixels[:, 40:150] = (255, 0, 0)
    pixels[:, 150:260] = (0, 0, 255)
    if portrait:
        pixels = pixels.transpose(1, 0, 2).copy()
    Image.fromarray(pixels).save(tmp_path / "split.png")
    (img,) = load_images([tmp_path / "split.png"], 64)
    if portrait:
        img = img.transpose(1, 0, 2)
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    assert (img[..., 1] < 10).all()  # no green: the crop is centred, not a squeeze of the whole image
    assert (img[:, :30] == (255, 0, 0)).all() and (img[:, 34:] == (0, 0, 255)).all()


def test_overlay_blends_the_colormap_over_the_image():
    white = np.full((2, 2, 3), 255, np.uint8)
    blended = overlay(white, np.array([[0.0, 0.0], [1.0, 1.0]]))
    np.testing.assert_array_equal(blended[0, 0], (128, 128, 191))  # half white, half jet's dark blue
    np.testing.assert_array_equal(blended[1, 0], (191, 128, 128))  # half white, half jet's dark red


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"images": "missing"}, "nope.png"),
        ({"images": "not an image"}, "notes.png"),
        ({"methods": ["gradcam", "lime"]}, "valid: cam, gradcam"),
        ({"layer": "conv9"}, "unknown layer 'conv9'"),
        ({"class_names": ["a", "b"]}, "2 class names"),
        ({"target": 4}, "target class 4"),
    ],
)
def test_bad_input_fails_before_anything_is_written(loaded, images, tmp_path, change, message):
    args = {"layer": LAYER, "images": images, "methods": ["gradcam"], "class_names": None, "target": None}
    if change.get("images") == "missing":
        change = {"images": [*images, tmp_path / "nope.png"]}
    elif change.get("images") == "not an image":
        (tmp_path / "notes.png").write_text("not a picture")
        change = {"images": [images[0], tmp_path / "notes.png"]}
    args.update(change)
    before = set(tmp_path.iterdir())
    with pytest.raises(CnnscopeError, match=re.escape(message)):
        explain(loaded, out=tmp_path / "out", size=SIZE, **args)
    assert set(tmp_path.iterdir()) == before


def test_non_finite_map_fails_naming_method_and_image(loaded, images, tmp_path, monkeypatch):
    monkeypatch.setitem(
        METHODS, "gradcam", lambda model, layer, x, t: torch.full((len(x), *x.shape[2:]), np.nan)
    )
    before = set(tmp_path.iterdir())
    with pytest.raises(CnnscopeError, match=r"Grad-CAM gives a non-finite map for .*cat\.png"):
        explain(loaded, LAYER, images, ["cam", "gradcam"], tmp_path / "out", SIZE)
    assert set(tmp_path.iterdir()) == before


def test_repeated_stems_get_distinct_overlays(loaded, tmp_path):
    images = [_write(tmp_path / "a" / "x.png", 70, 64, 1), _write(tmp_path / "b" / "x.png", 64, 70, 2)]
    out = explain(loaded, LAYER, images, ["gradcam"], tmp_path / "out", SIZE)
    assert {p.name for p in (out / "overlays").iterdir()} == {"x__gradcam.png", "x_2__gradcam.png"}
    first, second = (np.asarray(Image.open(out / "inputs" / f"{s}.png")) for s in ("x", "x_2"))
    np.testing.assert_array_equal(first, load_images(images[:1], SIZE)[0])
    np.testing.assert_array_equal(second, load_images(images[1:], SIZE)[0])
    assert pd.read_csv(out / "predictions.csv")["stem"].tolist() == ["x", "x_2"]
