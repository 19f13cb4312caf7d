"""JPEG decoding through libjpeg-turbo: the same grey levels as Pillow's draft mode, or Pillow itself."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from conftest import draw_digit
from PIL import Image

from digitscan import decode
from digitscan.decode import COARSE_SIDE, FINE_SIDE, load_grey

EXIF_ORIENTATION = 0x0112


def jpeg_bytes(img: Image.Image, orientation: int = 1, **options) -> bytes:
    exif = Image.Exif()
    if orientation != 1:
        exif[EXIF_ORIENTATION] = orientation
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif.tobytes(), **options)
    return buf.getvalue()


def through_pillow(path, side: int, monkeypatch) -> np.ndarray:
    with monkeypatch.context() as patch:
        patch.setattr(decode, "_turbo_jpeg", lambda data, side: None)
        return load_grey(path, side)


@pytest.mark.parametrize("size", [(110, 120), (95, 47), (1003, 750)])
@pytest.mark.parametrize("mode", ["L", "RGB"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_plain_jpeg_decodes_to_the_same_grey_levels_as_through_pillow(tmp_path, monkeypatch, size, mode,
                                                                        orientation):
    digit = draw_digit(size=size).convert(mode)
    path = tmp_path / "scan.jpg"
    path.write_bytes(jpeg_bytes(digit, orientation, quality=90))
    for side in (COARSE_SIDE, FINE_SIDE):
        turbo = decode._turbo_jpeg(path.read_bytes(), side)
        assert turbo is not None  # libjpeg-turbo took it
        pillow = through_pillow(path, side, monkeypatch)
        assert turbo.shape == pillow.shape and np.array_equal(turbo, pillow)
        assert np.array_equal(load_grey(path, side), turbo)
    height, width = load_grey(path, FINE_SIDE).shape
    turned = orientation in (5, 6, 7, 8)  # a quarter turn: stored on its side, shown upright
    assert (height > width) == ((size[0] > size[1]) if turned else (size[1] > size[0]))


@pytest.mark.parametrize("kind", ["progressive", "cmyk"])
def test_jpegs_that_libjpeg_turbo_is_not_given_are_read_by_pillow(tmp_path, monkeypatch, kind):
    digit = draw_digit(size=(400, 300))
    if kind == "progressive":
        data = jpeg_bytes(digit.convert("RGB"), progressive=True)
    else:
        data = jpeg_bytes(digit.convert("CMYK"))
    path = tmp_path / "scan.jpg"
    path.write_bytes(data)
    assert decode._turbo_jpeg(data, COARSE_SIDE) is None
    grey = load_grey(path, COARSE_SIDE)
    assert np.array_equal(grey, through_pillow(path, COARSE_SIDE, monkeypatch))
    assert grey.min() < 100 < 200 < grey.max()  # dark ink on light paper, as drawn


def test_a_damaged_jpeg_falls_back_to_pillow_and_says_why(tmp_path):
    data = jpeg_bytes(draw_digit(size=(400, 300)).convert("RGB"))
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 3])
    assert decode._turbo_jpeg(path.read_bytes(), COARSE_SIDE) is None
    with pytest.raises(decode.DecodeError, match="truncated"):
        load_grey(path)


@pytest.mark.parametrize("exif", [b"Exif\x00\x00not a TIFF header", b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff"])
def test_a_broken_exif_block_is_ignored_as_viewers_ignore_it(tmp_path, monkeypatch, exif):
    path = tmp_path / "scan.jpg"
    draw_digit(size=(120, 110)).convert("RGB").save(path, exif=exif)
    grey = load_grey(path, FINE_SIDE)
    assert grey.shape == (110, 120) and grey.min() < 100 < 200 < grey.max()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing said of it either: a library user's stderr stays quiet
        assert np.array_equal(through_pillow(path, FINE_SIDE, monkeypatch), grey)
    assert decode.plain_jpeg_bytes(path) == path.read_bytes()  # upright: a device may decode it
