"""A torch Dataset over image paths (decode each image, preprocess each batch) and the DataLoader that batches it."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from .allocator import keep_freed_memory
from .decode import COARSE_SIDE, FINE_SIDE, DecodeError, load_grey, plain_jpeg_bytes
from .defaults import RUN_BATCH
from .fields import FIELD_SIDE
from .preprocess import FRAME, MEAN, STD, Invert, Prepared, prepare_batch, split_ink

OK, BLANK, ERROR = "ok", "blank", "error"
ACROSS = (0.9, 0.6)
"""Ink spanning this share of a photo's width (height) at the first look, but under this share of its
height (width), runs across the photo: a line beside the digit, not a digit (`look_again`)..."""
PHOTO_SCALE = 4
"""...in a photo, an image reduced at least this many times for the first look (a cell cut from a
scan is not, and its digit may well fill it from edge to edge)."""


@dataclass(frozen=True)
class Item:
    """One decoded and preprocessed input; `pixels` is None unless status is ok. A JPEG handed over to be
    decoded on the model's device has only its file's bytes, in `encoded`."""

    index: int
    pixels: np.ndarray | None
    inverted: bool | None
    status: str
    error: str = ""
    encoded: bytes | None = None
    grey: tuple[np.ndarray, float] | None = None
    """A field (`ScanDataset(field=True)`): the decoded image, and how many of the file's pixels
    each of its pixels stands for, to be cut into digits with the model at hand."""
    box: tuple[int, int, int, int] | None = None
    """An ok item's ink box (left, top, right, bottom) in the decoded image, `decoded` (height, width)
    pixels: the image may have been reduced."""
    decoded: tuple[int, int] | None = None


@dataclass
class Batch:
    """Items collated for the model: `pixels` holds only the ok items, in `ok` order. `encoded` holds
    the items handed over as JPEG bytes (their positions in `items`, and the bytes)."""

    indices: list[int]
    pixels: torch.Tensor
    ok: list[int]
    items: list[Item]
    encoded: list[tuple[int, bytes]] = field(default_factory=list)
    greys: list[tuple[np.ndarray, float]] = field(default_factory=list)
    """The fields among the items (in `ok` order), decoded, with their scales."""

    def pin_memory(self) -> Batch:
        self.pixels = self.pixels.pin_memory()
        return self


class ScanDataset(Dataset[Item]):
    """Reads `sources[i]` (a path or a PIL image) and prepares it as MNIST would. Never raises for bad input.

    The DataLoader fetches a batch at a time (`__getitems__`): each image is decoded on its own, then
    the batch is preprocessed together. With `hand_over`, plain JPEGs are only read, for the model's
    device to decode and prepare (`ondevice.py`).
    """

    def __init__(self, sources: Sequence[str | Image.Image], invert: Invert = "auto", hand_over: bool = False,
                 field: bool = False) -> None:
        self.sources = sources
        self.invert = invert
        self.hand_over = hand_over
        self.field = field

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> Item:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[Item]:
        if self.field:
            return self._fields(indices)
        handed: dict[int, Item] = {}
        for i in indices if self.hand_over else ():
            source = self.sources[i]
            try:
                data = plain_jpeg_bytes(source) if isinstance(source, str) else None
            except Exception:  # a bug in reading the header must not cost the batch: decoded below instead
                data = None
            if data is not None:
                handed[i] = Item(i, None, None, OK, encoded=data)
        failed: dict[int, Item] = {}
        greys = self._decode([i for i in indices if i not in handed], COARSE_SIDE, failed)
        prepared = self._prepare(greys, failed)
        shrunk = [i for i in prepared if reduced(greys[i].shape)]
        pixels = torch.from_numpy(np.stack([_pixels(prepared[i]) for i in shrunk])) if shrunk else torch.empty(0)
        boxes = [prepared[i].box if prepared[i].pixels is not None else None for i in shrunk]
        again = [shrunk[k] for k in look_again(pixels, boxes, [greys[i].shape for i in shrunk],
                                               lambda k: _scale(self.sources[shrunk[k]], greys[shrunk[k]]))]
        finer = self._decode(again, FINE_SIDE, failed)
        prepared |= self._prepare(finer, failed, second_look=True)
        greys |= finer
        return [handed.get(i) or failed.get(i) or _item(i, prepared[i], greys[i].shape) for i in indices]

    def _fields(self, indices: Sequence[int]) -> list[Item]:
        """Fields are only decoded here: they are cut into digits where the model is (fields.py)."""
        failed: dict[int, Item] = {}
        greys = self._decode(indices, FIELD_SIDE, failed)
        return [failed.get(i) or Item(i, None, None, OK, grey=(greys[i], _scale(self.sources[i], greys[i])))
                for i in indices]

    def _decode(self, indices: Sequence[int], side: int, failed: dict[int, Item]) -> dict[int, np.ndarray]:
        greys = {}
        for i in indices:
            try:
                greys[i] = load_grey(self.sources[i], side)
            except DecodeError as exc:
                failed[i] = Item(i, None, None, ERROR, str(exc))
            except Exception as exc:  # a decoder bug must cost one row, not the run
                failed[i] = _unexpected(i, exc)
        return greys

    def _prepare(self, greys: dict[int, np.ndarray], failed: dict[int, Item],
                 second_look: bool = False) -> dict[int, Prepared]:
        """Preprocess the batch; should that fail, each image alone, so that a failure costs one row."""
        try:
            batch = prepare_batch(list(greys.values()), self.invert, second_look)
            return {i: batch[k] for k, i in enumerate(greys)}
        except Exception as exc:
            if len(greys) > 1:
                return {i: p for i, g in greys.items() for p in self._prepare({i: g}, failed, second_look).values()}
            for i in greys:
                failed[i] = _unexpected(i, exc)
            return {}


def reduced(shape: Sequence[int]) -> bool:
    """Whether an image decoded at COARSE_SIDE was reduced to it (a photo or a large scan)."""
    return COARSE_SIDE <= min(shape) < 2 * COARSE_SIDE


def look_again(pixels: torch.Tensor, boxes: Sequence[tuple[int, int, int, int] | None],
               shapes: Sequence[Sequence[int]], scale: Callable[[int], float]) -> list[int]:
    """Which images reduced to COARSE_SIDE (their frames, boxes, None where blank, and shapes) to read
    again at FINE_SIDE, where a small digit is more than a few pixels: those with little or no ink; those
    whose framed ink lies in pieces apart; and photos (`scale(k)`, the source's pixels a decoded pixel
    stands for, at least PHOTO_SCALE) whose ink runs from edge to edge one way but not the other
    (ACROSS). The last two are a digit framed with what clutter left (a sheet's or a shadow's edge, a
    floor's grout lines) where the first look did not find the clutter."""
    if not len(boxes):
        return []
    split = split_ink(pixels).tolist()
    again = []
    for k, (box, (height, width)) in enumerate(zip(boxes, shapes, strict=True)):
        if box is None:
            again.append(k)
            continue
        left, top, right, bottom = box
        wide, tall = (right - left + 1) / width, (bottom - top + 1) / height
        small = max(right - left, bottom - top) + 1 < 2 * COARSE_SIDE // 3
        across = (wide >= ACROSS[0] and tall < ACROSS[1]) or (tall >= ACROSS[0] and wide < ACROSS[1])
        if small or split[k] or (across and scale(k) >= PHOTO_SCALE):
            again.append(k)
    return again


def _pixels(prepared: Prepared) -> np.ndarray:
    """The frame, or an empty one when blank."""
    return prepared.pixels if prepared.pixels is not None else np.full((FRAME, FRAME), -MEAN / STD, np.float32)


def _scale(source: str | Image.Image, grey: np.ndarray) -> float:
    """How many of the source's pixels one pixel of its decoded `grey` stands for."""
    try:
        if isinstance(source, Image.Image):
            size = source.size
        else:
            with Image.open(source) as im:
                size = im.size
    except Exception:  # it decoded a moment ago; without its size, boxes stay in decoded pixels
        return 1.0
    return max(size) / max(grey.shape)


def _item(index: int, prepared: Prepared, decoded: tuple[int, ...]) -> Item:
    if prepared.pixels is None:
        return Item(index, None, prepared.inverted, BLANK)
    return Item(index, prepared.pixels, prepared.inverted, OK, box=prepared.box, decoded=(decoded[0], decoded[1]))


def _unexpected(index: int, exc: Exception) -> Item:
    return Item(index, None, None, ERROR, f"unexpected failure: {type(exc).__name__}: {exc}"[:200])


def prepared_items(sources: Sequence[str | Image.Image], invert: Invert = "auto",
                   batch_size: int = RUN_BATCH) -> Iterator[Item]:
    """Each source read as `run` reads it, a batch at a time, in this process (for small sets: labelled
    scans, calibration renders, the frames review shows)."""
    dataset = ScanDataset(sources, invert)
    for start in range(0, len(sources), batch_size):
        yield from dataset.__getitems__(range(start, min(start + batch_size, len(sources))))


def collate(items: list[Item]) -> Batch:
    """Stack the ok items' pixels into one N x 1 x 28 x 28 tensor."""
    ok = [i for i, item in enumerate(items) if item.pixels is not None]
    if ok:
        pixels = torch.from_numpy(np.stack([items[i].pixels for i in ok])).unsqueeze(1)  # type: ignore[misc]
    else:
        pixels = torch.empty(0, 1, FRAME, FRAME)
    light = [Item(it.index, None, it.inverted, it.status, it.error) for it in items]
    encoded = [(pos, item.encoded) for pos, item in enumerate(items) if item.encoded is not None]
    fields = [pos for pos, item in enumerate(items) if item.grey is not None]
    greys = [item.grey for item in items if item.grey is not None]
    return Batch([it.index for it in items], pixels, fields or ok, light, encoded, greys)


def make_loader(dataset: ScanDataset, batch_size: int, workers: int, pin_memory: bool,
                indices: Sequence[int] | None = None, prefetch: int = 4) -> DataLoader:
    """Batches in input order; `indices` restricts the loader to some items (used to resume and to retry)."""
    order = list(range(len(dataset))) if indices is None else list(indices)
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    return DataLoader(dataset, batch_sampler=batches, num_workers=workers, collate_fn=collate,
                      pin_memory=pin_memory, persistent_workers=False, worker_init_fn=_worker_start,
                      prefetch_factor=prefetch if workers else None)


def _worker_start(worker_id: int) -> None:
    keep_freed_memory()  # the loader's processes are digitscan's own, whoever started the loader
