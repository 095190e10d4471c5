"""Reading a Broden-format probe dataset (real ``broden1_*`` or the synthetic world).

Broden's format, as this loader reads it:

* ``index.csv`` -- ``image,split,ih,iw,sh,sw`` and one column per category. A cell holds
  ``;``-separated entries: an integer is an image-level label (scene, texture), anything else is the
  name of a pixel-mask PNG relative to ``images/``.
* Mask PNGs encode the label number of each pixel as ``R + 256 * G``, at ``sh x sw`` (half the image).
* ``label.csv`` -- ``number,name,category,frequency,coverage,syns``; ``category`` may list several
  categories, e.g. ``material(36);object(3)``.
* ``category.csv`` -- ``name,first,last,count,frequency``.
* ``c_<category>.csv`` -- ``code,number,name,frequency,coverage``; a label's *primary* category is the
  one where its coverage is largest (the category its IoU is scored in).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cnnscope.data.rgb import read_rgb
from cnnscope.errors import DatasetError

INDEX_FIXED = ("image", "split", "ih", "iw", "sh", "sw")


@dataclass(frozen=True)
class Label:
    number: int
    name: str
    primary: str
    categories: tuple[str, ...]


@dataclass(frozen=True)
class Record:
    """One row of ``index.csv``: the image and, per category, its mask files and image labels."""

    image: str
    split: str
    ih: int
    iw: int
    sh: int
    sw: int
    masks: dict[str, tuple[str, ...]]
    scalars: dict[str, tuple[int, ...]]


def _read_csv(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    if not path.is_file():
        raise DatasetError(
            f"{path} is missing. A Broden-format dataset needs index.csv, category.csv, label.csv "
            "and c_<category>.csv; run the download step (real Broden) or the synthworld step."
        )
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetError(
                f"{path} is malformed: missing column(s) {', '.join(missing)} "
                f"(found: {', '.join(reader.fieldnames or [])}). Re-download or regenerate it."
            )
        return list(reader)


class BrodenDataset:
    """The index, label metadata and per-image decoding of one Broden-format directory."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(
                f"dataset directory {self.root} does not exist. Generate it (synthworld step) or "
                "download it (download step, e.g. dataset=broden1_224), or fix the data path."
            )
        cats = _read_csv(self.root / "category.csv", ("name",))
        self.categories: tuple[str, ...] = tuple(r["name"] for r in cats)
        self.labels: dict[int, Label] = self._read_labels()
        self.records: list[Record] = self._read_index()

    def _read_labels(self) -> dict[int, Label]:
        rows = _read_csv(self.root / "label.csv", ("number", "name", "category", "frequency", "coverage"))
        coverage: dict[int, dict[str, float]] = {}
        for cat in self.categories:
            path = self.root / f"c_{cat}.csv"
            for r in _read_csv(path, ("code", "number", "name", "frequency", "coverage")):
                try:
                    coverage.setdefault(int(r["number"]), {})[cat] = float(r["coverage"])
                except ValueError as e:
                    raise DatasetError(f"{path}: bad number or coverage in row {r}: {e}") from e
        labels: dict[int, Label] = {}
        by_name: dict[str, int] = {}  # tables and figures key labels by name, so names must be unique
        for r in rows:
            try:
                num = int(r["number"])
            except ValueError as e:
                raise DatasetError(f"{self.root / 'label.csv'}: bad label number in row {r}") from e
            if num == 0:  # some copies list '-' (unlabelled) as label 0
                continue
            if num in labels:
                raise DatasetError(
                    f"{self.root / 'label.csv'}: label number {num} is given twice ({labels[num].name!r} and "
                    f"{r['name']!r}); every label needs its own number"
                )
            if r["name"] in by_name:
                raise DatasetError(
                    f"{self.root / 'label.csv'}: label name {r['name']!r} is given to numbers "
                    f"{by_name[r['name']]} and {num}; every label needs its own name (Broden adds a "
                    "suffix such as -s or -c)"
                )
            by_name[r["name"]] = num
            cats = coverage.get(num, {})
            if not cats:
                raise DatasetError(
                    f"{self.root / 'label.csv'}: label {num} ({r['name']}) is in no c_<category>.csv"
                )
            primary = max(cats, key=lambda c: cats[c])
            labels[num] = Label(num, r["name"], primary, tuple(cats))
        return labels

    def _read_index(self) -> list[Record]:
        path = self.root / "index.csv"
        rows = _read_csv(path, (*INDEX_FIXED, *self.categories))
        records = []
        for line, r in enumerate(rows, start=2):
            masks: dict[str, tuple[str, ...]] = {}
            scalars: dict[str, tuple[int, ...]] = {}
            for cat in self.categories:
                entries = [e for e in (r[cat] or "").split(";") if e]
                masks[cat] = tuple(e for e in entries if not e.isdigit())
                scalars[cat] = tuple(int(e) for e in entries if e.isdigit())
            try:
                sizes = [int(r[k]) for k in ("ih", "iw", "sh", "sw")]
            except (TypeError, ValueError) as e:
                raise DatasetError(f"{path} line {line}: bad image or mask size ({e})") from e
            records.append(Record(r["image"], r["split"], *sizes, masks, scalars))
        if not records:
            raise DatasetError(f"{path} lists no images")
        return records

    def __len__(self) -> int:
        return len(self.records)

    @property
    def pixel_categories(self) -> tuple[str, ...]:
        """Categories with at least one mask PNG (in Broden: color, object, part, material)."""
        return tuple(c for c in self.categories if any(r.masks[c] for r in self.records))

    @property
    def image_categories(self) -> tuple[str, ...]:
        """Categories with at least one image-level label (in Broden: scene, texture)."""
        return tuple(c for c in self.categories if any(r.scalars[c] for r in self.records))

    def image(self, i: int) -> np.ndarray:
        """The RGB image of record ``i`` as ``uint8`` (H, W, 3)."""
        path = self.root / "images" / self.records[i].image
        return np.asarray(read_rgb(path))

    def mask(self, i: int, file: str) -> np.ndarray:
        """Decode one mask PNG of record ``i`` to label numbers (R + 256 * G) as ``int32``."""
        path = self.root / "images" / file
        try:
            with Image.open(path) as im:
                rgb = np.asarray(im.convert("RGB")).astype(np.int32)
        except (OSError, ValueError) as e:
            raise DatasetError(
                f"mask {path} (listed in index.csv for {self.records[i].image}) is missing or "
                f"unreadable ({e}); re-download or regenerate the dataset"
            ) from e
        r = self.records[i]
        if rgb.shape[:2] != (r.sh, r.sw):
            raise DatasetError(
                f"mask {path} is {rgb.shape[1]}x{rgb.shape[0]} but index.csv says {r.sw}x{r.sh}"
            )
        return rgb[..., 0] + 256 * rgb[..., 1]
