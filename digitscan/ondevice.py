"""The GPU pipeline: JPEG bytes decoded on the model's device (nvJPEG on a GPU) and preprocessed there.

The loader workers only read the files (`ScanDataset(hand_over=True)`); here a batch of bytes is
decoded at full size in one call, reduced by the same integer factors as `decode.load_grey` reduces
(a box filter), and prepared by `preprocess.prepare_batch` on the device, with the same second look
at a finer resolution. On the CPU the same code runs with libjpeg-turbo: that is how it is tested.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .dataset import look_again, reduced
from .decode import COARSE_SIDE, FINE_SIDE, reduction
from .preprocess import Invert, PreparedBatch, prepare_batch


def prepare_on_device(encoded: Sequence[bytes], device: torch.device, invert: Invert) -> PreparedBatch | None:
    """Decode and prepare JPEG files' bytes on `device`; None when its decoder refuses the batch (a
    damaged file among them: the caller then reads each file on the CPU, which says what is wrong)."""
    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its decoders in favour of TorchCodec, which has no nvJPEG batch
        # decoding for still images yet; the warning would only reach users, who can do nothing about it.
        warnings.simplefilter("ignore", DeprecationWarning)
        from torchvision.io import ImageReadMode, decode_jpeg  # here: importing torchvision takes seconds

        data = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in encoded]
        try:
            greys = [g[0] for g in decode_jpeg(data, mode=ImageReadMode.GRAY, device=device)]
        except RuntimeError:
            return None
    with torch.device(device):
        coarse = _reduced(greys, COARSE_SIDE)
        prepared = prepare_batch(coarse, invert)
        boxes, blank = prepared.box.tolist(), prepared.blank.tolist()  # one copy from the device, not one an image
        shrunk = [k for k, g in enumerate(coarse) if reduced(g.shape)]
        found = [None if blank[k] else tuple(boxes[k]) for k in shrunk]
        again = [shrunk[k] for k in look_again(prepared.pixels[shrunk], found, [coarse[k].shape for k in shrunk],
                                               lambda k: max(greys[shrunk[k]].shape) / max(coarse[shrunk[k]].shape))]
        if again:
            finer = prepare_batch(_reduced([greys[k] for k in again], FINE_SIDE), invert, second_look=True)
            rows = torch.tensor(again)
            prepared.pixels[rows], prepared.inverted[rows] = finer.pixels, finer.inverted
            prepared.blank[rows], prepared.box[rows] = finer.blank, finer.box
    return prepared


def _reduced(greys: Sequence[torch.Tensor], side: int) -> list[torch.Tensor]:
    """H x W uint8 images reduced as `decode.load_grey` reduces them (an integer factor, averaging
    boxes), those of one size in one call: on a GPU, each call costs more than the arithmetic."""
    out = list(greys)
    sizes: dict[tuple[int, int], list[int]] = {}
    for k, grey in enumerate(greys):
        sizes.setdefault((grey.shape[0], grey.shape[1]), []).append(k)
    for size, members in sizes.items():
        factor = reduction(size, side)
        if factor >= 2:
            stack = torch.stack([greys[k] for k in members]).unsqueeze(1).float().div_(255.0)
            out_of = F.avg_pool2d(stack, factor, ceil_mode=True)[:, 0]
            for k, small in zip(members, out_of, strict=True):
                out[k] = small
    return out
