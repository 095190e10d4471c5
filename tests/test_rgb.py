"""Images of every mode PIL reads reach the model with their real intensities, or are refused in one
line (cnnscope.data.rgb), through every reader: explain, Broden folders, image folders, stimuli."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms

from cnnscope.data.rgb import ImageModeError, read_rgb
from cnnscope.errors import CnnscopeError
from cnnscope.explain import load_images
from cnnscope.models.registry import IMAGENET_MEAN, IMAGENET_STD, LoadedModel

GREY = 30000  # of 65535: a mid grey, 116.7 of 255


def _save(tmp_path, name: str, im: Image.Image, **kw) -> str:
    path = tmp_path / name
    im.save(path, **kw)
    return str(path)


def _pixels(path) -> np.ndarray:
    return np.asarray(read_rgb(path)).astype(int)


def test_16_bit_grey_keeps_its_intensity_as_png_and_tiff(tmp_path):
    a = np.full((6, 5), GREY, np.uint16)
    a[0, 0], a[0, 1] = 0, 65535
    want = np.rint(a.astype(float) * 255 / 65535).astype(int)
    png = _save(tmp_path, "g.png", Image.fromarray(a))
    big_endian = _save(tmp_path, "g.tif", Image.fromarray(a.astype(">u2")))
    assert Image.open(png).mode in ("I;16", "I") and Image.open(big_endian).mode == "I;16B"
    for path in (png, big_endian):
        got = _pixels(path)
        assert got.shape == (6, 5, 3)
        np.testing.assert_array_equal(got, np.repeat(want[..., None], 3, 2))
    assert want[1, 1] == 117


def test_the_model_sees_a_16_bit_mid_grey_as_mid_grey(tmp_path):
    """The issue's case: every pixel 30000/65535 was shown to the model as white (255)."""
    png = _save(tmp_path, "g.png", Image.fromarray(np.full((40, 30), GREY, np.uint16)))
    x = load_images([tmp_path / "g.png"], 16)
    assert x.shape == (1, 16, 16, 3) and (x == 117).all(), png
    seen = LoadedModel(torch.nn.Identity(), IMAGENET_MEAN, IMAGENET_STD).normalize(torch.from_numpy(x))
    want = (117 / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(seen[0, :, 3, 3], want.float())


def test_palette_bilevel_grey_and_cmyk_convert_exactly(tmp_path):
    pal = Image.new("P", (4, 2))
    pal.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    pal.putpixel((1, 0), 1)
    got = _pixels(_save(tmp_path, "p.png", pal))
    assert got[0, 0].tolist() == [10, 20, 30] and got[0, 1].tolist() == [200, 100, 50]
    bits = Image.new("1", (3, 3), 0)
    bits.putpixel((2, 2), 1)
    got = _pixels(_save(tmp_path, "b.png", bits))
    assert got[0, 0].tolist() == [0, 0, 0] and got[2, 2].tolist() == [255, 255, 255]
    assert (_pixels(_save(tmp_path, "l.png", Image.new("L", (2, 2), 77))) == 77).all()
    cmyk = _save(tmp_path, "c.tif", Image.new("CMYK", (2, 2), (0, 255, 255, 0)))
    assert (_pixels(cmyk) == [255, 0, 0]).all()


def test_alpha_is_composited_over_white(tmp_path):
    rgba = Image.new("RGBA", (3, 1), (10, 20, 30, 0))  # transparent: its colour means nothing
    rgba.putpixel((1, 0), (0, 0, 0, 128))
    rgba.putpixel((2, 0), (40, 50, 60, 255))
    got = _pixels(_save(tmp_path, "a.png", rgba))
    assert got[0].tolist() == [[255, 255, 255], [127, 127, 127], [40, 50, 60]]
    la = Image.new("LA", (2, 1), (0, 0))
    la.putpixel((1, 0), (90, 255))
    assert _pixels(_save(tmp_path, "la.png", la))[0].tolist() == [[255] * 3, [90] * 3]
    pal = Image.new("P", (2, 1))
    pal.putpalette([1, 2, 3, 4, 5, 6] + [0] * 762)
    pal.putpixel((1, 0), 1)
    got = _pixels(_save(tmp_path, "pt.png", pal, transparency=0))
    assert got[0].tolist() == [[255, 255, 255], [4, 5, 6]]


def test_an_srgb_profile_keeps_the_pixels_and_a_broken_one_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    got = _pixels(_save(tmp_path, "s.png", Image.fromarray(a), icc_profile=srgb))
    assert np.abs(got - a).max() <= 1
    broken = _save(tmp_path, "x.png", Image.fromarray(a), icc_profile=b"not a profile" * 20)
    with pytest.raises(ImageModeError, match=r"x\.png.*ICC colour profile"):
        read_rgb(broken)


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("i32.tif", lambda: Image.fromarray(np.full((3, 3), 70000, np.int32))),
        ("f.tif", lambda: Image.fromarray(np.full((3, 3), 0.5, np.float32))),
        ("lab.tif", lambda: Image.new("LAB", (3, 3), (50, 0, 0))),
    ],
)
def test_modes_with_no_defined_rgb_are_refused_in_one_line(tmp_path, name, make):
    path = _save(tmp_path, name, make())
    with pytest.raises(ImageModeError) as e:
        read_rgb(path)
    assert name in str(e.value) and "save it as 8- or 16-bit" in str(e.value) and "\n" not in str(e.value)


def test_unreadable_files_fail_naming_them(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "dir.png").mkdir()
    for name in ("empty.png", "dir.png", "missing.png"):
        with pytest.raises(CnnscopeError, match=f"cannot read image .*{name}"):
            read_rgb(tmp_path / name)


def test_every_reader_uses_the_one_conversion(tmp_path):
    """Broden folders, image folders and stimuli read a 16-bit file as explain does."""
    from cnnscope.data import imagefolder
    from cnnscope.shapebias import stimuli

    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8), GREY, np.uint16)).save(buf, format="PNG")
    (tmp_path / "cat1.png").write_bytes(buf.getvalue())
    assert (imagefolder.load_images([tmp_path / "cat1.png"], 8) == 117).all()
    single = stimuli.Stimulus(tmp_path / "cat1.png", "cat", None)
    assert (stimuli.load_rgb([single]) == 117).all()
