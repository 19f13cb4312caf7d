"""digitscan: read handwritten digits from scanned images.

    >>> import digitscan
    >>> results = digitscan.predict(["scan.png"])          # doctest: +SKIP
    >>> results[0].digit, results[0].confidence, results[0].status

The names below load lazily, so that `import digitscan` (and `digitscan --help`) stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "predict": "scorer", "Scorer": "scorer", "Result": "scorer", "Reading": "scorer",
    "prepare": "preprocess", "load_grey": "decode", "load_archive": "model", "DigitNet": "model",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'digitscan' has no attribute {name!r}")
