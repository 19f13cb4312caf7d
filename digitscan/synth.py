"""Render MNIST digits as realistic scans and photos: for the examples, the robustness benchmark and tests.

Each style imitates a source that digitscan meets in the field; all randomness comes from `rng`.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

Style = Callable[[np.ndarray, np.random.Generator], Image.Image]


def ink_alpha(digit: np.ndarray, height: int, rng: np.random.Generator, thickness: int = 0) -> np.ndarray:
    """Ink coverage (0..1) of an MNIST digit (28 x 28 uint8, white on black) scaled to `height` px."""
    a = digit.astype(np.float32) / 255.0
    rows, cols = np.nonzero(a > 0.1)
    a = a[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    scale = height / a.shape[0]
    size = (max(1, round(a.shape[1] * scale)), max(1, height))
    img = Image.fromarray(a, mode="F").resize(size, Image.Resampling.BICUBIC)
    img = img.rotate(float(rng.uniform(-6, 6)), resample=Image.Resampling.BILINEAR, expand=True)
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
    small = np.asarray(Image.fromarray(alpha, "F").resize((16, 16), Image.Resampling.BILINEAR))
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


def tight_crop(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Dark ink on white cut exactly at the ink, so it touches all four borders; half of them stretched
    to fill a square box, as some data sets normalise digits."""
    alpha = ink_alpha(digit, int(rng.integers(32, 100)), rng, thickness=int(rng.integers(0, 3)))
    rows, cols = np.nonzero(alpha > 0.3)
    alpha = alpha[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    if rng.random() < 0.5:
        side = max(alpha.shape)
        alpha = np.asarray(Image.fromarray(alpha, "F").resize((side, side), Image.Resampling.BILINEAR))
    return compose(np.clip(alpha, 0, 1), (245, 245, 242), (25, 25, 30), rng, noise=2.0)


def drawing_canvas(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A drawing app's PNG: an opaque canvas (mostly black with a white digit) inside a frame of fully
    transparent pixels whose colour is black."""
    height = int(rng.integers(40, 140))
    alpha = place(ink_alpha(digit, height, rng, thickness=int(rng.integers(1, 4))), (int(height * 1.4),) * 2, rng)
    light = rng.random() < 0.7
    canvas = np.where(light, alpha, 1.0 - alpha) * 255
    h, w = canvas.shape
    top, bottom, left, right = (int(rng.integers(2, max(3, h // 2))) for _ in range(4))
    rgba = np.zeros((h + top + bottom, w + left + right, 4), dtype=np.uint8)
    rgba[top:top + h, left:left + w, :3] = canvas.astype(np.uint8)[..., None]
    rgba[top:top + h, left:left + w, 3] = 255
    return Image.fromarray(rgba, "RGBA")


def cluttered_photo(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A phone photo of a small digit on a sheet lying on a tiled floor: the tiles show along one or
    two edges of the frame, a shadow falls across the sheet, JPEG."""
    side = int(rng.integers(400, 800))
    tile = int(rng.integers(50, 120))
    floor = np.full((side, side), float(rng.uniform(110, 170)), dtype=np.float32)
    at = np.arange(side)
    grout = (at[:, None] % tile < 4) | (at[None, :] % tile < 4)
    floor[grout] = float(rng.uniform(40, 80))
    sheet = np.zeros((side, side), dtype=bool)
    edges = rng.permutation(4)[: int(rng.integers(1, 3))]
    margin = [int(side * rng.uniform(0.06, 0.16)) if e in edges else 0 for e in range(4)]
    sheet[margin[0]:side - margin[1], margin[2]:side - margin[3]] = True
    paper = float(rng.uniform(200, 240))
    grey = np.where(sheet, paper, floor)
    height = int(side * rng.uniform(0.08, 0.16))
    alpha = ink_alpha(digit, height, rng, thickness=int(rng.integers(1, 4)))
    ah, aw = alpha.shape
    top = int(side / 2 - ah / 2 + rng.uniform(-0.15, 0.15) * side)
    left = int(side / 2 - aw / 2 + rng.uniform(-0.15, 0.15) * side)
    region = grey[top:top + ah, left:left + aw]
    region[:] = region * (1 - alpha) + 30 * alpha
    cy, cx = rng.uniform(0, side, 2)
    shadow = np.exp(-(((at[:, None] - cy) ** 2 + (at[None, :] - cx) ** 2) / (2 * (side * 0.3) ** 2)))
    grey = grey * (1 - float(rng.uniform(0.2, 0.45)) * shadow)
    img = Image.fromarray(np.clip(grey + rng.normal(0, 3, grey.shape), 0, 255).astype(np.uint8)).convert("RGB")
    return jpeg(img.filter(ImageFilter.GaussianBlur(0.8)), int(rng.integers(70, 90)))


def _stroke_width(alpha: np.ndarray) -> int:
    """The pen's width: the median ink across a row or down a column (the thinner), where there is ink."""
    widths = [float(np.median(line[line > 0.5])) for line in (alpha.sum(axis=1), alpha.sum(axis=0))]
    return max(2, round(min(widths)))


def _on_paper(alpha: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Pen on white paper with a margin, flatbed scan, as clean_scan."""
    alpha = place(np.clip(alpha, 0, 1), (int(alpha.shape[0] * rng.uniform(1.2, 1.8)),) * 2, rng)
    return compose(alpha, (250, 250, 248), (20, 20, 30), rng, noise=2.0, blur=0.4)


def continental_one(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A 1 written the European way: a long up-stroke (flag) at the top, sometimes a foot."""
    alpha = ink_alpha(digit, int(rng.integers(50, 120)), rng)
    h = alpha.shape[0]
    pad = h // 2
    alpha = np.pad(alpha, ((0, 0), (pad, pad)))
    top = int(np.argmax(alpha.sum(axis=1) > 0.5))
    bottom = h - 1 - int(np.argmax(alpha[::-1].sum(axis=1) > 0.5))
    x_top = float(np.average(np.arange(alpha.shape[1]), weights=alpha[top] + 1e-6))
    x_foot = float(np.average(np.arange(alpha.shape[1]), weights=alpha[bottom] + 1e-6))
    img = Image.fromarray(alpha, "F")
    pen = ImageDraw.Draw(img)
    width = _stroke_width(alpha)
    pen.line([(x_top, top), (x_top - h * rng.uniform(0.18, 0.35), top + h * rng.uniform(0.2, 0.4))], fill=1.0,
             width=width)
    if rng.random() < 0.4:
        half = h * rng.uniform(0.15, 0.3)
        pen.line([(x_foot - half, bottom), (x_foot + half, bottom)], fill=1.0, width=width)
    return _on_paper(np.asarray(img), rng)


def crossed_seven(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A 7 written the European way: a short bar across the middle of its stem."""
    alpha = ink_alpha(digit, int(rng.integers(50, 120)), rng)
    h = alpha.shape[0]
    row = int(h * rng.uniform(0.45, 0.6))
    x_mid = float(np.average(np.arange(alpha.shape[1]), weights=alpha[row] + 1e-6))
    img = Image.fromarray(alpha, "F")
    half, tilt = h * rng.uniform(0.15, 0.25), h * rng.uniform(-0.05, 0.05)
    ImageDraw.Draw(img).line([(x_mid - half, row + tilt), (x_mid + half, row - tilt)], fill=1.0,
                             width=_stroke_width(alpha))
    return _on_paper(np.asarray(img), rng)


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
    "tight_crop": tight_crop,
    "drawing_canvas": drawing_canvas,
    "cluttered_photo": cluttered_photo,
}
"""Styles that render any digit."""

SHAPES: dict[str, tuple[int, Style]] = {
    "continental_one": (1, continental_one),
    "crossed_seven": (7, crossed_seven),
}
"""Continental forms of one digit each: (the digit, its style)."""


@dataclass(frozen=True)
class FieldLook:
    """How a field of several digits is written and captured (`field`)."""

    gaps: tuple[int, int] = (0, 10)
    """Pixels between neighbouring digits' ink, drawn uniformly in this range."""
    touching: bool = False
    """One neighbouring pair pushed together until their strokes touch."""
    comb: bool = False
    """Each digit written in its own box of a printed comb."""
    dark: bool = True
    """Dark ink on light paper; else light on dark (a board, an inverted scan)."""
    photo: bool = False
    """A phone photo (uneven light, blur, JPEG) rather than a flatbed scan."""


def field(digits: list[np.ndarray], rng: np.random.Generator, look: FieldLook = FieldLook()) -> Image.Image:
    """MNIST digits (28 x 28, white on black) written left to right on one line, as `look` says."""
    height = int(rng.integers(36, 64))
    thickness = int(rng.integers(0, 2))
    alphas = [ink_alpha(d, int(height * rng.uniform(0.85, 1.0)), rng, thickness) for d in digits]
    gaps = [int(rng.integers(look.gaps[0], look.gaps[1] + 1)) for _ in alphas[1:]]
    if look.touching and gaps:
        gaps[int(rng.integers(0, len(gaps)))] = -1000  # placed by _touch below
    cell = max(a.shape[1] for a in alphas) + 2 * height // 5 if look.comb else 0
    margin = height // 3
    width = sum(cell or a.shape[1] for a in alphas) + sum(max(0, g) for g in gaps) * (not cell) + 2 * margin
    canvas = np.zeros((height + 2 * margin + height // 4, width + height), dtype=np.float32)
    x, lines = margin, []
    for k, alpha in enumerate(alphas):
        ah, aw = alpha.shape
        top = margin + int(rng.integers(0, height // 4 + 1)) + (height - ah) // 2
        if cell:
            left = x + (cell - aw) // 2
            lines.append(x)
        elif k and gaps[k - 1] == -1000:
            left = _touch(canvas, alpha, top, x)
        else:
            left = x + (max(0, gaps[k - 1]) if k else 0)
        canvas[top:top + ah, left:left + aw] = np.maximum(canvas[top:top + ah, left:left + aw], alpha)
        x = (x + cell) if cell else left + aw
    canvas = canvas[:, :x + margin]
    shear = float(rng.uniform(-0.2, 0.2))  # the hand's slant (a printed comb stays upright)
    canvas = np.asarray(Image.fromarray(canvas, "F").transform(
        canvas.shape[::-1], Image.Transform.AFFINE, (1, shear, -shear * canvas.shape[0] / 2, 0, 1, 0),
        resample=Image.Resampling.BILINEAR))
    if cell:
        img = Image.fromarray(canvas, "F")
        draw, bottom = ImageDraw.Draw(img), canvas.shape[0] - margin // 2
        line = max(1, height // 24)
        draw.rectangle([lines[0], margin // 2, x, bottom], outline=1.0, width=line)
        for at in lines[1:]:
            draw.line([(at, margin // 2), (at, bottom)], fill=1.0, width=line)
        canvas = np.asarray(img)
    alpha = np.clip(canvas, 0, 1)
    paper, ink = ((245, 243, 238), (25, 25, 40)) if look.dark else ((35, 45, 40), (235, 235, 225))
    if look.photo:
        return jpeg(compose(alpha, paper, ink, rng, light=0.3, noise=4.0, blur=0.9), int(rng.integers(60, 90)))
    return compose(alpha, paper, ink, rng, noise=2.0, blur=0.4)


def _touch(canvas: np.ndarray, alpha: np.ndarray, top: int, x: int) -> int:
    """The column at which `alpha`, placed at row `top`, just touches the ink already left of `x`."""
    ah, aw = alpha.shape
    for left in range(x, max(0, x - aw), -1):
        window = canvas[top:top + ah, left:left + aw]
        if window.shape[1] < aw or bool(((window > 0.5) & (alpha > 0.5)).any()):
            return left
    return x


FIELD_LOOKS: dict[str, FieldLook] = {
    "scan": FieldLook(),
    "touching": FieldLook(touching=True),
    "comb": FieldLook(comb=True),
    "light_on_dark": FieldLook(dark=False),
    "photo": FieldLook(photo=True),
}
"""The kinds of field the benchmark and the examples render."""
