"""Finding the input images (and videos): folders, files and `-` (paths on standard input)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TextIO

from .errors import DigitscanError
from .video import SUFFIXES as VIDEO_SUFFIXES

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm"})
EXTENSIONS = IMAGE_SUFFIXES | VIDEO_SUFFIXES


class InputError(DigitscanError):
    """An INPUT argument that names nothing usable (raised before any work starts)."""


def check_inputs(inputs: Iterable[str]) -> None:
    """Fail early, naming the argument, when an INPUT (other than '-') does not exist."""
    for item in inputs:
        if item != "-" and not os.path.lexists(item):
            raise InputError(f"{item}: no such file or folder")


def iter_paths(inputs: Iterable[str], recursive: bool = False, stdin: TextIO | None = None) -> Iterator[str]:
    """Yield image paths as found: folders scanned by extension in sorted order, files as given.

    A file named directly is always yielded (whatever its extension), so that a broken or misnamed
    file still gets a row; '-' yields one path per non-empty line of standard input.
    """
    seen: set[tuple[int, int]] = set()
    for item in inputs:
        if item == "-":
            source = stdin or sys.stdin
            if source is None:
                raise InputError("-: standard input is closed")
            for line in source:
                line = line.rstrip("\r\n")
                if line:
                    yield line
        elif os.path.isdir(item):
            yield from _scan(item, recursive, seen)
        else:
            yield item


def _scan(folder: str, recursive: bool, seen: set[tuple[int, int]]) -> Iterator[str]:
    """A folder's images in sorted order (with `recursive`, then its subfolders'). Each folder is read
    once, however many links lead to it: a link to the folder itself or to an ancestor ends there."""
    try:
        info = os.stat(folder)
        if (info.st_dev, info.st_ino) in seen:
            return
        seen.add((info.st_dev, info.st_ino))
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        raise InputError(f"{folder}: cannot list folder ({exc.strerror})") from None
    subfolders = []
    for entry in entries:
        if _is_dir(entry):
            subfolders.append(entry.path)
        elif os.path.splitext(entry.name)[1].lower() in EXTENSIONS:
            yield entry.path  # whatever it is (a broken link, a pipe): its row will say
    if recursive:
        for sub in subfolders:
            yield from _scan(sub, recursive, seen)


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir(follow_symlinks=True)
    except OSError:  # a link loop: not a folder; its row says what it is
        return False
