"""Writing files atomically: a reader, or a crash, never sees half a file."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block succeeds, rename it over `path`.

    A crash or an error mid-write leaves the previous file whole (and at worst a stray .tmp).
    """
    tmp = Path(path).with_name(Path(path).name + ".tmp")
    yield tmp
    os.replace(tmp, path)


def write_json_atomic(path: Path, data: Any) -> None:
    with replacing(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
