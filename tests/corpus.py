"""Builds a folder of the files people really point digitscan at, with what each row must say."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from conftest import draw_digit
from PIL import Image

EXIF_ORIENTATION = 0x0112


def build_corpus(folder: Path) -> dict[str, tuple[str, str]]:
    """Write the corpus into `folder`; return {file name: (expected status, expected error fragment)}."""
    folder.mkdir(parents=True, exist_ok=True)
    seven = draw_digit(size=(120, 110))
    expect: dict[str, tuple[str, str]] = {}

    def save(name: str, img: Image.Image, status: str = "ok", **kw) -> None:
        img.save(folder / name, **kw)
        expect[name] = (status, "")

    save("plain.png", seven)
    save("comma, \"quoted\" näme 七.png", seven)
    rotated = seven.rotate(90, expand=True)  # stored on its side, EXIF says turn it back
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6  # "rotate 90 degrees clockwise to display"
    save("exif_rotated.jpg", rotated.convert("RGB"), exif=exif.tobytes())
    rgba = Image.new("RGBA", seven.size, (0, 0, 0, 0))
    rgba.putalpha(Image.eval(seven, lambda v: 255 - v))
    save("transparent.png", rgba)
    wide = (np.asarray(seven, dtype=np.uint16) * 257).astype(np.uint16)
    save("sixteen_bit.png", Image.fromarray(wide))
    save("one_bit.png", seven.point(lambda v: 255 if v > 128 else 0).convert("1"))
    save("cmyk.jpg", seven.convert("CMYK"))
    frames = [seven.convert("P"), Image.new("P", seven.size, 0)]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    expect["animated.gif"] = ("ok", "")
    save("palette.gif", seven.convert("P"))
    save("scan.webp", seven.convert("RGB"))
    save("scan.pgm", seven)
    save("scan.tiff", seven)
    save("big_photo.jpg", seven.convert("RGB").resize((3000, 2750)), quality=80)
    save("blank.png", Image.new("L", (80, 80), 228), status="blank")

    Image.new("1", (10_000, 10_000)).save(folder / "bomb.png")
    expect["bomb.png"] = ("error", "decompression bomb")
    (folder / "empty.png").write_bytes(b"")
    expect["empty.png"] = ("error", "empty file")
    (folder / "notes.png").write_text("this was a text file renamed to .png\n")
    expect["notes.png"] = ("error", "not an image")
    buf = io.BytesIO()
    seven.save(buf, "PNG")
    (folder / "truncated.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    expect["truncated.png"] = ("error", "truncated")
    buf = io.BytesIO()
    seven.convert("RGB").resize((400, 400)).save(buf, "JPEG")
    (folder / "cut_short.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
    expect["cut_short.jpg"] = ("error", "truncated")
    os.symlink(folder / "does-not-exist.png", folder / "broken_link.png")
    expect["broken_link.png"] = ("error", "file not found")
    return expect
