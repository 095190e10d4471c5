"""Every image file as the 8-bit sRGB pixels a model is shown, with the intensities the file means.

PIL's ``convert("RGB")`` is right for most modes, but not for all: it clips 16-bit values at 255 (a
mid grey of 30000/65535 becomes white), ignores an embedded ICC profile (the colours of a CMYK print
file), and drops alpha, leaving whatever colour a transparent pixel happens to hold. So, by mode:

* 16-bit grey (``I;16``, ``I;16B``, ``I;16L``, ``I;16N``, and ``I`` read from a PNG, whose samples
  are at most 16 bits): ``round(v * 255 / 65535)``;
* an embedded ICC profile: converted to sRGB through it (littleCMS, perceptual intent);
* alpha (``RGBA``, ``LA``, ``PA``, ``RGBa``, a palette or grey image with a transparent colour):
  composited over white, as a page shows the image;
* ``1``, ``L``, ``P``, ``RGB``, ``RGBX``, ``CMYK``, ``YCbCr``, ``HSV``: PIL's conversion, which is exact
  for them;
* modes with no defined range or no faithful conversion (32-bit ``I`` from other formats, ``F``,
  ``LAB``, ``La``): refused in one line naming the file and the fix.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageOps

from cnnscope.errors import CnnscopeError

SIXTEEN_BIT = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})
PLAIN = frozenset({"1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr", "HSV"})
ALPHA = frozenset({"RGBA", "LA", "PA", "RGBa"})
SRGB = ImageCms.createProfile("sRGB")


class ImageModeError(CnnscopeError):
    """An image whose pixels have no faithful 8-bit RGB form."""


def _sixteen_bit(im: Image.Image) -> Image.Image:
    v = np.asarray(im, dtype=np.float64)
    if v.min() < 0 or v.max() > 65535:  # an ``I`` image holds int32; one from a PNG never leaves 16 bits
        raise ImageModeError(f"values outside 0..65535 in a {im.mode} image")
    return Image.fromarray(np.rint(v * (255 / 65535)).astype(np.uint8), "L").convert("RGB")


def _over_white(im: Image.Image) -> Image.Image:
    rgba = np.asarray(im.convert("RGBA"), dtype=np.float64)
    alpha = rgba[..., 3:] / 255
    return Image.fromarray(np.rint(rgba[..., :3] * alpha + 255 * (1 - alpha)).astype(np.uint8), "RGB")


def _through_profile(im: Image.Image, icc: bytes) -> Image.Image:
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if im.mode not in ("RGB", "CMYK", "L"):
            im = im.convert("RGBA" if im.mode in ALPHA or "transparency" in im.info else "RGB")
        return ImageCms.profileToProfile(im, source, SRGB, outputMode="RGBA" if im.mode == "RGBA" else "RGB")
    except (ImageCms.PyCMSError, OSError, ValueError) as e:
        raise ImageModeError(f"its embedded ICC colour profile cannot be applied ({e})") from e


def to_rgb(im: Image.Image, file_format: str | None = None) -> Image.Image:
    """``im`` (read from a file of ``file_format``, e.g. ``"PNG"``) as 8-bit sRGB (see the module
    docstring); :class:`ImageModeError` where no conversion is faithful."""
    icc = im.info.get("icc_profile")
    if icc and im.mode in PLAIN | ALPHA:
        im = _through_profile(im, icc)
    if im.mode in SIXTEEN_BIT or (im.mode == "I" and file_format == "PNG"):
        return _sixteen_bit(im)
    if im.mode in ALPHA or (im.mode in ("P", "L", "RGB") and "transparency" in im.info):
        return _over_white(im)
    if im.mode in PLAIN:
        return im.convert("RGB")
    raise ImageModeError(f"mode {im.mode} has no defined 8-bit RGB form")


def read_rgb(path: str | Path, transpose: bool = False) -> Image.Image:
    """The image file at ``path`` as 8-bit sRGB; ``transpose`` first applies its EXIF orientation (a
    phone photo the way up it is viewed). An unreadable file or one whose mode has no faithful RGB form
    fails in one line naming it."""
    try:
        with Image.open(path) as im:
            im.load()
            if transpose:
                ImageOps.exif_transpose(im, in_place=True)
            return to_rgb(im, im.format)
    except ImageModeError as e:
        raise ImageModeError(
            f"cannot read image {path}: {e}; save it as 8- or 16-bit RGB or greyscale (PNG, JPEG)"
        ) from e
    except (OSError, ValueError, Image.DecompressionBombError) as e:  # missing, a folder, not an image
        raise CnnscopeError(f"cannot read image {path}: {e}") from e
