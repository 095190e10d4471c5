"""Feature extraction: one layer's activations over the packed probe set, streamed to disk.

The extract step stores what dissection needs and nothing more, in a form that does not depend on
any dissection setting (so changing the quantile or IoU mode never reruns extraction):

* ``activations.npy`` -- ``float16 (N, C, h, w)``, memory-mapped (a quarter of NetDissect-Lite's
  float64 dumps); values beyond float16's range fail loudly, with the fix (``store_dtype=float32``);
* ``maxima.npy``      -- ``float32 (N, C)``, each unit's maximum per image (top-image galleries);
* ``unit_range.npy``  -- ``float32 (2, C)``, each unit's min and max over everything (histograms).

The forward pass stops right after the requested layer, runs under ``torch.inference_mode``, batched,
on the GPU when there is one (with autocast there) and on the CPU otherwise.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

import numpy as np
import torch
from numpy.lib.format import open_memmap
from torch import nn
from tqdm import tqdm

from cnnscope.errors import CnnscopeError
from cnnscope.io import atomic_file, read_json, write_json
from cnnscope.models.layers import resolve_layer
from cnnscope.models.registry import LoadedModel

FLOAT16_MAX = float(np.finfo(np.float16).max)
log = logging.getLogger(__name__)


class _StopForward(Exception):
    """Raised by the capture hook: nothing after the requested layer needs to run."""


class LayerCapture:
    """Context manager: a forward hook that keeps one module's output (and leaves no hook behind).

    ``keep_graph`` keeps the copy attached to autograd (to optimise an input through it).
    """

    def __init__(self, layer: nn.Module, stop: bool = True, keep_graph: bool = False) -> None:
        self.layer, self.stop, self.keep_graph = layer, stop, keep_graph
        self.output: torch.Tensor | None = None
        self._handle = None

    def _hook(self, _module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        if not isinstance(output, torch.Tensor) or output.dim() != 4:
            raise CnnscopeError(
                f"layer output must be a (batch, channels, height, width) tensor to dissect, got "
                f"{type(output).__name__} {getattr(output, 'shape', '')}; choose a conv layer"
            )
        kept = output if self.keep_graph else output.detach()
        self.output = kept.to(torch.float32, copy=True)  # a later in-place op cannot touch it
        if self.stop:
            raise _StopForward

    def __enter__(self) -> LayerCapture:
        self._handle = self.layer.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.remove()

    def __call__(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        with contextlib.suppress(_StopForward):
            model(x)
        assert self.output is not None, "the hooked layer was not reached by the forward pass"
        return self.output


def _checkpoint(
    out: Path, acts: np.ndarray, maxima: np.ndarray, done: int, lo: torch.Tensor, hi: torch.Tensor
) -> None:
    """Flush the arrays, then record (atomically) how many images they hold."""
    acts.flush()
    maxima.flush()
    with atomic_file(out / "progress.json") as tmp:
        write_json(tmp, {"done": done, "lo": lo.tolist(), "hi": hi.tolist()})


def pick_device(requested: str = "auto") -> torch.device:
    """``auto`` -> the GPU when there is one, else the CPU."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def extract_layer(
    loaded: LoadedModel,
    layer: str,
    images: np.ndarray,
    out: str | Path,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    amp: bool = True,
    store_dtype: str = "float16",
    model_name: str = "model",
    progress: bool = True,
    checkpoint_s: float = 30.0,
) -> dict:
    """Run ``loaded`` over ``images`` (``uint8 (N, H, W, 3)``) and write the layer's arrays to ``out``.

    Every ``checkpoint_s`` seconds the arrays are flushed and ``progress.json`` records how many images
    are done; called again on the same ``out`` (a killed job's work directory) it continues from there.
    """
    out, device = Path(out), torch.device(device)
    module = resolve_layer(loaded.module, layer, model_name)
    n = len(images)
    acts = maxima = None
    lo = hi = None
    start, progress_file = 0, out / "progress.json"
    if progress_file.is_file():
        state = read_json(progress_file)
        acts = np.load(out / "activations.npy", mmap_mode="r+")
        maxima = np.load(out / "maxima.npy", mmap_mode="r+")
        start = state["done"]
        lo, hi = (torch.tensor(state[k], device=device) for k in ("lo", "hi"))
        log.info("extract: resuming %s at image %d of %d", layer, start, n)
    last_checkpoint = time.monotonic()
    use_amp = amp and device.type == "cuda"
    with LayerCapture(module) as cap, torch.inference_mode():
        batches = range(start, n, batch_size)
        for a in tqdm(batches, desc=f"extract {layer}", disable=not progress, total=len(batches)):
            batch = torch.from_numpy(np.array(images[a : a + batch_size]))
            if device.type == "cuda":
                batch = batch.pin_memory().to(device, non_blocking=True)
            x = loaded.normalize(batch)
            with torch.autocast(device.type, enabled=use_amp):
                y = cap(loaded.module, x)
            if acts is None:
                acts = open_memmap(out / "activations.npy", "w+", np.dtype(store_dtype), (n, *y.shape[1:]))
                maxima = open_memmap(out / "maxima.npy", "w+", np.float32, (n, y.shape[1]))
            if store_dtype == "float16" and y.abs().max().item() > FLOAT16_MAX:
                raise CnnscopeError(
                    f"{model_name} {layer}: activations exceed float16's range ({FLOAT16_MAX}); "
                    "rerun extraction with store_dtype=float32"
                )
            flat = y.flatten(2)
            bmin, bmax = flat.amin(dim=(0, 2)), flat.amax(dim=(0, 2))
            lo = bmin if lo is None else torch.minimum(lo, bmin)
            hi = bmax if hi is None else torch.maximum(hi, bmax)
            maxima[a : a + len(y)] = flat.amax(2).cpu().numpy()
            acts[a : a + len(y)] = y.cpu().numpy().astype(store_dtype)
            if time.monotonic() - last_checkpoint >= checkpoint_s:
                _checkpoint(out, acts, maxima, a + len(y), lo, hi)
                last_checkpoint = time.monotonic()
    acts.flush()
    maxima.flush()
    np.save(out / "unit_range.npy", torch.stack([lo, hi]).cpu().numpy())
    progress_file.unlink(missing_ok=True)
    return {"n_images": n, "shape": list(acts.shape), "dtype": store_dtype, "layer": layer}
