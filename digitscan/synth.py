"""Render MNIST digits as realistic scans and photos: for the examples, the robustness benchmark and tests.

Each style imitates a source that digitscan meets in the field; all randomness comes from `rng`.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageFilter

Style = Callable[[np.ndarray, np.random.Generator], Image.Image]


def ink_alpha(digit: np.ndarray, height: int, rng: np.random.Generator, thickness: int = 0) -> np.ndarray:
    """Ink coverage (0..1) of an MNIST digit (28 x 28 uint8, white on black) scaled to `height` px."""
    a = digit.astype(np.float32) / 255.0
    rows, cols = np.nonzero(a > 0.1)
    a = a[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    scale = height / a.shape[0]
    size = (max(1, round(a.shape[1] * scale)), max(1, height))
    img = Image.fromarray(a, mode="F").resize(size, Image.BICUBIC)
    img = img.rotate(float(rng.uniform(-6, 6)), resample=Image.BILINEAR, expand=True)
    ink = Image.fromarray((np.clip(np.asarray(img), 0, 1) * 255).astype(np.uint8))
    if thickness > 0:
        ink = ink.filter(ImageFilter.MaxFilter(2 * thickness + 1))
    elif thickness < 0:
        ink = ink.filter(ImageFilter.MinFilter(-2 * thickness + 1))
    alpha = np.asarray(ink, dtype=np.float32) / 255.0
    return np.clip((alpha - 0.25) / 0.45, 0.0, 1.0)  # pen ink: crisper than MNIST's soft edges


def place(alpha: np.ndarray, canvas: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Put the ink on a canvas (h, w) at a random position that keeps it whole."""
    h, w = canvas
    ah, aw = alpha.shape
    h, w = max(h, ah + 2), max(w, aw + 2)
    out = np.zeros((h, w), dtype=np.float32)
    top = int(rng.integers(0, h - ah + 1))
    left = int(rng.integers(0, w - aw + 1))
    out[top:top + ah, left:left + aw] = alpha
    return out


def compose(alpha: np.ndarray, paper: tuple[float, float, float], ink: tuple[float, float, float],
            rng: np.random.Generator, light: float = 0.0, noise: float = 0.0, blur: float = 0.0) -> Image.Image:
    """Paint ink over paper with a linear light falloff (0..1), Gaussian noise (grey levels) and blur."""
    h, w = alpha.shape
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * np.linspace(-1, 1, w)[None, :] + np.sin(angle) * np.linspace(-1, 1, h)[:, None])
    shade = 1.0 - light * (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    a = alpha[..., None]
    rgb = (np.array(paper) * (1 - a) + np.array(ink) * a) * shade[..., None]
    rgb = rgb + rng.normal(0, noise, rgb.shape) if noise else rgb
    img = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")
    return img.filter(ImageFilter.GaussianBlur(blur)) if blur else img


def jpeg(img: Image.Image, quality: int) -> Image.Image:
    """Round-trip through JPEG at `quality` (keeps the artefacts, returns a decoded image)."""
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf)


def clean_scan(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Black or blue pen on white paper, flatbed scan, PNG."""
    height = int(rng.integers(40, 120))
    alpha = place(ink_alpha(digit, height, rng), (int(height * rng.uniform(1.2, 2)),) * 2, rng)
    ink = (20, 20, 30) if rng.random() < 0.6 else (30, 40, 120)
    return compose(alpha, (250, 250, 248), ink, rng, noise=2.0, blur=0.4)


def form_cell(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A cell cut from a scanned form: grey paper, scanner noise, thinner pen, tight crop."""
    height = int(rng.integers(28, 60))
    alpha = place(ink_alpha(digit, height, rng, thickness=int(rng.integers(-1, 1))),
                  (int(height * 1.25), int(height * rng.uniform(1.0, 1.4))), rng)
    grey = float(rng.uniform(200, 235))
    return compose(alpha, (grey, grey, grey), (40, 40, 40), rng, light=0.1, noise=float(rng.uniform(3, 8)), blur=0.5)


def ruled_cell(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A form cell cut with part of its printed box: straight lines along one to four edges."""
    height = int(rng.integers(36, 80))
    alpha = place(ink_alpha(digit, height, rng), (int(height * 1.5), int(height * rng.uniform(1.3, 1.8))), rng)
    h, w = alpha.shape
    thick = int(rng.integers(1, 4))
    for edge in rng.permutation(4)[: int(rng.integers(1, 5))]:
        offset = int(rng.integers(0, 3))
        if edge == 0:
            alpha[offset:offset + thick, :] = 0.8
        elif edge == 1:
            alpha[h - offset - thick:h - offset, :] = 0.8
        elif edge == 2:
            alpha[:, offset:offset + thick] = 0.8
        else:
            alpha[:, w - offset - thick:w - offset] = 0.8
    grey = float(rng.uniform(215, 245))
    return compose(alpha, (grey, grey, grey), (30, 30, 30), rng, light=0.1, noise=float(rng.uniform(2, 6)), blur=0.4)


def tinted_photo(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A phone photo on tinted paper: colour cast, uneven light, noise, blur, JPEG."""
    height = int(rng.integers(50, 160))
    size = int(height * rng.uniform(1.5, 2.5))
    alpha = place(ink_alpha(digit, height, rng, thickness=int(rng.integers(0, 3))), (size, size), rng)
    tints = [(235, 225, 190), (215, 230, 245), (245, 215, 220), (225, 235, 210), (200, 200, 195)]
    paper = tints[int(rng.integers(len(tints)))]
    ink = [(25, 25, 35), (30, 35, 110), (90, 90, 95)][int(rng.integers(3))]
    img = compose(alpha, paper, ink, rng, light=float(rng.uniform(0.1, 0.45)), noise=float(rng.uniform(3, 10)),
                  blur=float(rng.uniform(0.5, 1.5)))
    return jpeg(img, int(rng.integers(40, 85)))


def bitmap(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A 1-bit bitmap (black on white), 32 x 32 like old OCR data sets, or larger."""
    side = int(rng.choice([32, 32, 48, 64]))
    alpha = place(ink_alpha(digit, int(side * rng.uniform(0.7, 0.9)), rng), (side, side), rng)
    return Image.fromarray(np.where(alpha > 0.5, 0, 255).astype(np.uint8)).convert("1")


def low_res(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A tight 16 x 16 greyscale crop (like postal-code scanners), either polarity."""
    alpha = ink_alpha(digit, 64, rng, thickness=1)
    side = max(alpha.shape)
    alpha = place(alpha, (side + 4, side + 4), rng)
    small = np.asarray(Image.fromarray(alpha, "F").resize((16, 16), Image.BILINEAR))
    levels = small if rng.random() < 0.5 else 1.0 - small
    return Image.fromarray((np.clip(levels, 0, 1) * 255).astype(np.uint8))


def chalkboard(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Light chalk or white pen on a dark board, photographed (light on dark), JPEG."""
    height = int(rng.integers(40, 120))
    alpha = place(ink_alpha(digit, height, rng, thickness=1), (int(height * 1.8),) * 2, rng)
    board = [(30, 45, 35), (25, 25, 30), (50, 40, 35)][int(rng.integers(3))]
    img = compose(alpha, board, (225, 225, 215), rng, light=float(rng.uniform(0.0, 0.4)),
                  noise=float(rng.uniform(3, 9)), blur=float(rng.uniform(0.3, 1.0)))
    return jpeg(img, int(rng.integers(50, 90)))


def transparent(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A drawing exported with a transparent background: black ink in the alpha channel, RGBA."""
    height = int(rng.integers(40, 100))
    alpha = place(ink_alpha(digit, height, rng, thickness=1), (int(height * 1.5),) * 2, rng)
    rgba = np.zeros(alpha.shape + (4,), dtype=np.uint8)
    rgba[..., 3] = (alpha * 255).astype(np.uint8)
    return Image.fromarray(rgba, "RGBA")


def thin_pen(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A large, sharp photo of a fine-pen digit on white: thin strokes far from MNIST's, JPEG."""
    height = int(rng.integers(150, 300))
    alpha = place(ink_alpha(digit, height, rng, thickness=-2), (int(height * 1.6),) * 2, rng)
    img = compose(alpha, (245, 245, 240), (20, 20, 25), rng, light=0.15, noise=4.0, blur=0.8)
    return jpeg(img, 80)


STYLES: dict[str, Style] = {
    "clean_scan": clean_scan,
    "form_cell": form_cell,
    "ruled_cell": ruled_cell,
    "tinted_photo": tinted_photo,
    "bitmap": bitmap,
    "low_res": low_res,
    "chalkboard": chalkboard,
    "transparent": transparent,
    "thin_pen": thin_pen,
}
