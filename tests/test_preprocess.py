"""Preprocessing: polarity, background, blank detection, crop, 20 px box, centring."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from conftest import draw_digit, grey
from PIL import Image, ImageDraw, ImageFilter, ImageOps

from digitscan.decode import COARSE_SIDE, load_grey
from digitscan.preprocess import MEAN, STD, Prepared, _median, prepare


def pixels01(img_or_array) -> np.ndarray:
    a = img_or_array if isinstance(img_or_array, np.ndarray) else grey(img_or_array)
    prepared = prepare(a)
    assert prepared.pixels is not None, "expected ink"
    return prepared.pixels * STD + MEAN


def test_output_is_mnist_shaped_and_normalised():
    out = prepare(grey(draw_digit())).pixels
    assert out.shape == (28, 28) and out.dtype == np.float32
    assert out.min() == pytest.approx(-MEAN / STD, abs=1e-5)  # background is exactly MNIST's zero
    assert out.max() == pytest.approx((1 - MEAN) / STD, abs=1e-5)  # strongest ink is MNIST's one


def test_dark_ink_is_inverted_and_light_ink_is_not():
    dark = draw_digit(ink=20, paper=235)
    light = ImageOps.invert(dark)
    a, b = prepare(grey(dark)), prepare(grey(light))
    assert a.inverted is True and b.inverted is False
    assert np.abs(a.pixels - b.pixels).max() < 0.05  # both polarities give the same MNIST image


@pytest.mark.parametrize("paper,ink", [(200, 60), (150, 20), (90, 10)])
def test_polarity_on_grey_and_dark_tinted_paper(paper, ink):
    assert prepare(grey(draw_digit(ink=ink, paper=paper))).inverted is True
    assert prepare(grey(draw_digit(ink=255 - ink, paper=255 - paper))).inverted is False


def test_polarity_and_shape_survive_uneven_light_and_jpeg_noise():
    clean = grey(draw_digit(ink=30, paper=230))
    h, w = clean.shape
    light = np.linspace(1.0, 0.55, w)[None, :] * np.linspace(1.0, 0.85, h)[:, None]  # shadow across the page
    rng = np.random.default_rng(0)
    noisy = np.clip(clean * light + rng.normal(0, 0.03, clean.shape), 0, 1)
    buf = io.BytesIO()
    Image.fromarray((noisy * 255).astype(np.uint8)).save(buf, "JPEG", quality=40)
    buf.seek(0)
    shaded = prepare(load_grey(Image.open(buf)))
    assert shaded.inverted is True
    reference = pixels01(clean)
    got = shaded.pixels * STD + MEAN
    overlap = (np.minimum(got, reference).sum()) / reference.sum()
    assert overlap > 0.75  # the same strokes, not the shadow


def test_longer_side_is_20_and_aspect_is_kept():
    tall = pixels01(draw_digit(size=(200, 200), shape="one", box=(60, 20, 140, 180)))
    rows, cols = np.nonzero(tall > 0.1)
    height, width = np.ptp(rows) + 1, np.ptp(cols) + 1
    assert height in (20, 21)
    assert width < 8  # a thin upright stroke stays thin: no stretching to a square

    wide = pixels01(draw_digit(size=(300, 120), shape="zero", box=(20, 30, 280, 90)))
    rows, cols = np.nonzero(wide > 0.1)
    assert np.ptp(cols) + 1 in (20, 21) and np.ptp(rows) + 1 < 10


def test_centre_of_mass_is_centred_wherever_the_digit_was():
    for box in [(5, 5, 45, 60), (70, 40, 110, 100), (30, 10, 80, 60)]:
        out = pixels01(draw_digit(size=(120, 110), box=box))
        ys, xs = np.mgrid[0:28, 0:28] + 0.5
        cy, cx = (out * ys).sum() / out.sum(), (out * xs).sum() / out.sum()
        assert abs(cy - 14) <= 0.75 and abs(cx - 14) <= 0.75


@pytest.mark.parametrize("image", [
    Image.new("L", (64, 64), 240),                                    # white paper
    Image.new("L", (64, 64), 20),                                     # black paper
    Image.fromarray((np.random.default_rng(1).normal(200, 6, (80, 80))).clip(0, 255).astype(np.uint8)),  # noise
    Image.fromarray(np.tile(np.linspace(120, 250, 90), (90, 1)).astype(np.uint8)),  # a shadow, no ink
])
def test_no_ink_is_blank(image):
    assert prepare(grey(image)).pixels is None


def test_a_speck_of_dust_is_blank_not_a_digit():
    a = np.full((200, 200), 0.9, dtype=np.float32)
    a[100:102, 50:52] = 0.1
    assert prepare(a).pixels is None


def test_invert_override_is_obeyed():
    dark = grey(draw_digit(ink=20, paper=235))
    assert prepare(dark, invert="no").inverted is False
    assert prepare(dark, invert="yes").inverted is True


def test_a_small_digit_in_a_large_frame_is_read_at_full_detail(tmp_path):
    """Images are first decoded small; a digit that is small in its frame gets a second, finer look."""
    from digitscan.dataset import ScanDataset

    path = tmp_path / "small_seven.jpg"
    draw_digit(size=(900, 800), box=(420, 380, 470, 450)).convert("RGB").save(path, quality=90)
    item = ScanDataset([str(path)])[0]
    reference = prepare(load_grey(path, side=800)).pixels  # at full resolution
    assert item.status == "ok"
    assert np.abs(item.pixels - reference).mean() < 0.15


def boxed(img: Image.Image, ink: int = 30, width: int = 2) -> Image.Image:
    """The image with a printed box along its edges, as when a cell is cut from a form."""
    from PIL import ImageDraw

    out = img.copy()
    ImageDraw.Draw(out).rectangle([0, 0, out.width - 1, out.height - 1], outline=ink, width=width)
    return out


def test_a_forms_ruled_box_is_ignored():
    seven = draw_digit(size=(110, 120))
    plain, ruled = prepare(grey(seven)), prepare(grey(boxed(seven)))
    assert ruled.inverted is True
    assert np.abs(ruled.pixels - plain.pixels).mean() < 0.05


def test_an_empty_box_is_blank():
    assert prepare(grey(boxed(Image.new("L", (110, 120), 235)))).pixels is None


def test_a_tight_crops_own_bar_is_kept():
    bar = Image.new("L", (24, 24), 255)
    bar.paste(0, (0, 0, 24, 3))  # the top bar of a 7 that fills its crop
    bar.paste(0, (14, 3, 17, 24))
    out = pixels01(bar)
    assert out.sum(axis=1).max() > 5  # the bar is still there


def test_strong_vignetting_is_paper_not_ink():
    clean = grey(draw_digit(size=(300, 280), ink=30, paper=235))
    h, w = clean.shape
    yy, xx = np.mgrid[0:h, 0:w]
    falloff = 1 - 0.4 * (((yy - h / 2) / (h / 2)) ** 2 + ((xx - w / 2) / (w / 2)) ** 2)  # corners 80% darker
    noisy = clean * falloff + np.random.default_rng(0).normal(0, 0.02, clean.shape)
    shaded = prepare(np.clip(noisy, 0, 1).astype(np.float32))
    assert shaded.inverted is True
    assert np.abs(shaded.pixels - prepare(clean).pixels).mean() < 0.1  # a plane-only fit: 0.21


@pytest.mark.parametrize("canvas_pixels", [None, 1])
def test_a_batch_prepares_each_image_as_it_would_be_alone(canvas_pixels, monkeypatch):
    """Images of mixed sizes share padded canvases (or, over the memory bound, are split across several);
    padding and neighbours must not change any result."""
    from digitscan import preprocess
    from digitscan.preprocess import prepare_batch

    if canvas_pixels is not None:
        monkeypatch.setattr(preprocess, "CANVAS_PIXELS", canvas_pixels)

    images = [
        draw_digit(size=(120, 110)),                                   # dark ink
        ImageOps.invert(draw_digit(size=(118, 111), shape="zero")),    # light ink, padded in the same canvas
        boxed(draw_digit(size=(110, 120))),                            # a form cell
        Image.new("L", (100, 90), 240),                                # blank
        draw_digit(size=(40, 300), shape="one", box=(10, 20, 30, 280)),  # a canvas of its own
        draw_digit(size=(20, 20), ink=90, paper=200, box=(4, 3, 16, 17)),
    ]
    greys = [grey(img) for img in images]
    batch = prepare_batch(greys)
    for k, g in enumerate(greys):
        alone = prepare(g)
        assert (batch[k].pixels is None) == (alone.pixels is None), f"image {k}"
        assert batch[k].inverted == alone.inverted and batch[k].extent == alone.extent, f"image {k}"
        if alone.pixels is not None:
            np.testing.assert_allclose(batch[k].pixels, alone.pixels, atol=1e-4, err_msg=f"image {k}")
    assert [batch[k].pixels is None for k in range(len(greys))] == [False, False, False, True, False, False]
    assert [batch[k].inverted for k in (0, 1, 2)] == [True, False, True]


def _overlap(got: np.ndarray, reference: np.ndarray) -> float:
    return float(np.minimum(got, reference).sum() / reference.sum())


@pytest.mark.parametrize("shape", ["zero", "seven"])
def test_tight_crop_touching_every_border_keeps_its_polarity(shape):
    """A cell cut at the ink (or a digit stretched to fill its box): the ink reaches all four edges."""
    framed = draw_digit(size=(120, 120), shape=shape, box=(30, 20, 90, 100))
    tight = framed.crop(framed.point(lambda v: 255 if v < 128 else 0).getbbox()).resize((64, 64), Image.NEAREST)
    a = np.asarray(tight)
    assert all(edge.min() < 100 for edge in (a[0], a[-1], a[:, 0], a[:, -1]))  # ink on every edge
    got = prepare(grey(tight))
    assert got.inverted is True and got.pixels is not None
    assert _overlap(got.pixels * STD + MEAN, pixels01(ImageOps.expand(tight, 16, fill=235))) > 0.85


@pytest.mark.parametrize("shape, pen", [("zero", 9), ("seven", 15)])
def test_invert_yes_reads_a_tight_crop_that_is_mostly_ink(shape, pen):
    """Heavy strokes cut tightly: the ink is most of the image, so it is the steadier level. --invert yes
    says which tone is the paper; the frame must then hold the digit, not come back blank."""
    heavy = draw_digit(size=(120, 120), shape=shape, box=(30, 20, 90, 100)).filter(ImageFilter.MinFilter(pen))
    tight = heavy.crop(heavy.point(lambda v: 255 if v < 128 else 0).getbbox())
    assert (np.asarray(tight) < 128).mean() > 0.5  # mostly ink
    got = prepare(grey(tight), invert="yes")
    assert got.inverted is True and got.pixels is not None
    assert _overlap(got.pixels * STD + MEAN, pixels01(ImageOps.expand(tight, 16, fill=235))) > 0.85


@pytest.mark.parametrize("pen", [9, 13])
def test_a_tight_crop_that_is_mostly_ink_keeps_its_polarity(pen):
    """A heavy 0 cut tightly (63-71% ink): the ink is the steadiest level, and only the tones' shapes
    tell: the paper falls into pieces (corners, the loop), the ink is one."""
    heavy = draw_digit(size=(120, 120), shape="zero", box=(30, 20, 90, 100)).filter(ImageFilter.MinFilter(pen))
    tight = heavy.crop(heavy.point(lambda v: 255 if v < 128 else 0).getbbox())
    assert (np.asarray(tight) < 128).mean() > 0.6
    got = prepare(grey(tight))
    assert got.inverted is True and got.pixels is not None
    assert _overlap(got.pixels * STD + MEAN, pixels01(ImageOps.expand(tight, 16, fill=235))) > 0.85


@pytest.mark.parametrize("pen", [9, 13])
def test_a_mostly_ink_crop_touching_three_edges_keeps_its_polarity(pen):
    """The heavy 0 of the test above with a sliver of paper along one edge (as where a stroke's tip
    touches that edge between the points of the paper fit's grid): the ink reaches three edges, still a
    tight crop whose paper falls into pieces."""
    heavy = draw_digit(size=(120, 120), shape="zero", box=(30, 20, 90, 100)).filter(ImageFilter.MinFilter(pen))
    tight = ImageOps.expand(heavy.crop(heavy.point(lambda v: 255 if v < 128 else 0).getbbox()), (0, 0, 4, 0),
                            fill=235)
    a = np.asarray(tight)
    assert (a < 128).mean() > 0.55 and a[:, -1].min() > 128  # mostly ink, none on the right edge
    got = prepare(grey(tight))
    assert got.inverted is True and got.pixels is not None
    assert _overlap(got.pixels * STD + MEAN, pixels01(ImageOps.expand(tight, 16, fill=235))) > 0.85


def test_thin_light_strokes_in_pieces_are_ink_not_paper():
    """A small bitmap of light ink on black, a 7 whose stroke is broken: the light tone is in more pieces,
    as a tight crop's paper is, but it is one pixel thin, so it stays the ink."""
    seven = np.zeros((16, 12), dtype=np.uint8)
    seven[0, 1:] = 255
    for row in range(1, 16):
        seven[row, min(round(11 - (row - 2) * 11 / 13), 11)] = 255
    seven[7:9] = 0
    got = prepare(seven)
    assert got.inverted is False and got.pixels is not None


@pytest.mark.parametrize("pen", [15, 19])
def test_a_tight_crop_that_is_half_ink_keeps_its_polarity(pen):
    """Half ink, half paper: the whole image's level is the ink's, the border ring's the paper's. When the
    two disagree, the tones' shapes decide: the thicker tone, or where both tones reach all four edges,
    the tone in more pieces (with pen 19 the strokes are thicker than the paper between them)."""
    heavy = draw_digit(size=(120, 120), shape="seven", box=(30, 20, 90, 100)).filter(ImageFilter.MinFilter(pen))
    tight = heavy.crop(heavy.point(lambda v: 255 if v < 128 else 0).getbbox())
    assert 0.5 < (np.asarray(tight) < 128).mean() < 0.6
    got = prepare(grey(tight))
    assert got.inverted is True and got.pixels is not None
    assert _overlap(got.pixels * STD + MEAN, pixels01(ImageOps.expand(tight, 16, fill=235))) > 0.85


def test_drawing_app_canvas_inside_a_transparent_frame_is_cut_out():
    """A black canvas with a white digit, in a frame of fully transparent pixels whose colour is black."""
    canvas = ImageOps.invert(draw_digit(size=(90, 90), shape="zero"))
    rgba = Image.new("RGBA", (150, 130), (0, 0, 0, 0))
    rgba.paste(canvas.convert("RGBA"), (25, 20))
    decoded = load_grey(rgba)
    assert decoded.shape == (90, 90)
    got = prepare(decoded)
    assert got.inverted is False
    assert np.abs(got.pixels - prepare(grey(canvas)).pixels).max() < 1e-5


def test_light_strokes_on_a_transparent_background_are_seen():
    strokes = ImageOps.invert(draw_digit())  # white digit
    rgba = Image.new("RGBA", strokes.size, (255, 255, 255, 0))
    rgba.putalpha(strokes)
    got = prepare(load_grey(rgba))
    assert got.pixels is not None
    assert _overlap(got.pixels * STD + MEAN, pixels01(draw_digit())) > 0.85


def test_floor_along_the_photo_edge_is_not_taken_for_ink():
    """A small digit on a sheet, with a dark tiled floor showing along one edge of the photo."""
    photo = np.full((400, 400), 225, dtype=np.uint8)
    photo[:, 340:] = 120
    photo[::60, 340:] = 50  # grout between the tiles
    digit = draw_digit(size=(60, 60), ink=30, paper=225)
    photo[170:230, 160:220] = np.asarray(digit)
    got = prepare(photo)
    assert got.inverted is True and got.extent < 60
    assert _overlap(got.pixels * STD + MEAN, pixels01(digit)) > 0.85


def test_the_cpus_median_is_torchs_nanmedian():
    """Preprocessing takes medians with numpy's sort on a CPU (faster) and torch's nanmedian elsewhere."""
    values = torch.rand(64, 101)
    mask = torch.rand(64, 101) > 0.4
    mask[0], mask[1, 1:], mask[2, 2:] = False, False, False  # no value, one value, two values
    expected = torch.where(mask, values, torch.nan).nanmedian(dim=1).values.nan_to_num(0.0)
    assert torch.equal(_median(values, mask), expected)


def floor_photo(edges: str, mark: tuple[slice, slice] | None = None,
                digit_size: tuple[int, int] = (80, 90)) -> tuple[np.ndarray, np.ndarray]:
    """A digit on a sheet photographed on a tiled floor that shows along the left, the top, or the left
    and top edges, and the same sheet alone. `mark` darkens that region of the sheet in the photo only."""
    side, tile, strip = 600, 80, 70
    at = np.arange(side)
    floor = np.where((at[:, None] % tile < 4) | (at[None, :] % tile < 4), 60.0, 212.0)
    sheet = np.full((side, side), 225.0)
    photo = sheet.copy()
    if "left" in edges:
        photo[:, :strip] = floor[:, :strip]
    if "top" in edges:
        photo[:strip] = floor[:strip]
    if mark is not None:
        photo[mark] = 40.0
    digit = np.asarray(draw_digit(size=digit_size), dtype=np.float64)
    place = (slice(250, 250 + digit_size[1]), slice(280, 280 + digit_size[0]))
    for canvas in (photo, sheet):
        canvas[place] = np.minimum(canvas[place], digit)
    return photo.astype(np.uint8), sheet.astype(np.uint8)


def photographed_on_a_floor(edges: str, mark: tuple[slice, slice] | None = None) -> tuple[Prepared, Prepared]:
    """`floor_photo`'s photo and sheet, both prepared."""
    photo, sheet = floor_photo(edges, mark)
    return prepare(photo), prepare(sheet)


@pytest.mark.parametrize("edges", ["left", "left and top"])
def test_a_tiled_floor_along_the_edges_of_a_photo_is_not_ink(edges):
    """A sheet photographed on a tiled floor: only the grout lines across the sheet's edge reach the
    image's border, and the grid behind them is one piece with them; all of it is erased."""
    got, want = photographed_on_a_floor(edges)
    assert got.pixels is not None and want.pixels is not None
    assert _overlap(got.pixels * STD + MEAN, want.pixels * STD + MEAN) > 0.9


def test_a_small_digit_beside_a_floor_is_looked_at_again(tmp_path):
    """Read as `run` reads it, a photo is first decoded COARSE_SIDE pixels a side, where a 70 px digit in
    600 px is a few pixels and the floor along the top was not found: the frame held the floor's pieces
    and the digit. Ink in several pieces now gets the finer look, where the floor is found and erased."""
    from digitscan.dataset import ScanDataset

    photo, sheet = floor_photo("top", digit_size=(70, 70))
    for name, image in (("photo", photo), ("sheet", sheet)):
        Image.fromarray(image).save(tmp_path / f"{name}.png")
    got, want = ScanDataset([str(tmp_path / "photo.png"), str(tmp_path / "sheet.png")]).__getitems__([0, 1])
    assert got.status == want.status == "ok" and got.pixels is not None and want.pixels is not None
    assert got.box == want.box
    assert _overlap(got.pixels * STD + MEAN, want.pixels * STD + MEAN) > 0.9


def test_a_digit_beside_a_line_across_a_photo_is_looked_at_again(tmp_path):
    """A 7 on a sheet lying on a tiled floor, photographed (`synth.cluttered_photo`): at the first look
    the frame ran from the top of the photo to the bottom, the floor's edge with the digit. In a photo,
    ink running across it one way but not the other gets the finer look, where the digit is found alone;
    a scan's cell whose digit runs from edge to edge does not."""
    from digitscan.dataset import ScanDataset
    from digitscan.synth import cluttered_photo

    seven = np.asarray(ImageOps.invert(draw_digit(size=(28, 28), shape="seven", box=(6, 4, 22, 24))))
    cluttered_photo(seven, np.random.default_rng(17)).save(tmp_path / "photo.png")
    draw_digit(size=(110, 120), shape="one", box=(40, 4, 70, 116)).save(tmp_path / "cell.png")
    photo, cell = ScanDataset([str(tmp_path / "photo.png"), str(tmp_path / "cell.png")]).__getitems__([0, 1])
    left, top, right, bottom = photo.box
    assert photo.status == "ok" and bottom - top + 1 < 0.25 * photo.decoded[0]  # the digit: 8-16% of the photo
    assert cell.status == "ok" and cell.decoded[0] < 2 * COARSE_SIDE  # read at the first look only


def shadowed_sheet(shadow: float, centre: tuple[int, int] = (150, 450), digit_size: tuple[int, int] = (70, 70),
                   width: int | None = None) -> np.ndarray:
    """A 600 px photo of a sheet with a 7 on it (its top left at 280, 250), and a soft shadow (a
    phone's) darkening it by up to `shadow` around `centre` (row, column)."""
    side = 600
    sheet = np.asarray(draw_digit(size=(side, side), paper=225, box=(280, 250, 280 + digit_size[0],
                                                                     250 + digit_size[1])), dtype=np.float64)
    if width is not None:  # a thick pen: the stroke drawn again, wider
        thick = Image.fromarray(sheet.astype(np.uint8))
        ImageDraw.Draw(thick).line([(280, 250), (280 + digit_size[0], 250), (280 + digit_size[0] // 3,
                                                                          250 + digit_size[1])], fill=20, width=width)
        sheet = np.asarray(thick, dtype=np.float64)
    at = np.arange(side)
    dark = np.exp(-((at[:, None] - centre[0]) ** 2 + (at[None, :] - centre[1]) ** 2) / (2 * 180.0 ** 2))
    return (sheet * (1 - shadow * dark)).astype(np.uint8)


@pytest.mark.parametrize("centre", [(150, 450), (300, 300)])
def test_a_shadow_across_a_photo_is_not_framed_with_its_small_digit(tmp_path, centre):
    """A phone's shadow across the sheet (up and to the right of the digit, or over it) is ink to the
    paper's fit (a plane and a radial term cannot follow it), and it was framed with the digit. At the
    second look, ink broader than the strokes is shading and is removed: the digit is framed as
    without the shadow."""
    from digitscan.dataset import ScanDataset

    for name, shadow in (("shadowed", 0.45), ("plain", 0.0)):
        Image.fromarray(shadowed_sheet(shadow, centre)).save(tmp_path / f"{name}.png")
    got, want = ScanDataset([str(tmp_path / "shadowed.png"), str(tmp_path / "plain.png")]).__getitems__([0, 1])
    assert got.status == want.status == "ok" and got.pixels is not None and want.pixels is not None
    assert got.decoded == want.decoded and got.decoded[0] > 2 * COARSE_SIDE  # both read at the second look
    assert _overlap(got.pixels * STD + MEAN, want.pixels * STD + MEAN) > 0.9


def test_a_thick_pen_is_not_taken_for_shading():
    """What the second look removes as shading is broader than three times the strokes' half width: a
    digit drawn with a marker over 40 px wide in a 256 px image (wider than SHADE_RADIUS of it) keeps
    its strokes."""
    from digitscan.preprocess import prepare_batch

    thick = np.asarray(Image.fromarray(shadowed_sheet(0.0, digit_size=(250, 300), width=100)).resize((256, 256)))
    plain, looked = prepare_batch([thick]), prepare_batch([thick], second_look=True)
    assert _overlap(looked.pixels[0].numpy() * STD + MEAN, plain.pixels[0].numpy() * STD + MEAN) > 0.95


def test_ink_split_by_an_empty_row_or_column_is_in_pieces_apart():
    from digitscan.preprocess import split_ink

    frames = np.zeros((4, 28, 28), dtype=np.float32)
    frames[0, 4:24, 12:15] = 1.0  # one stroke
    frames[1, 4:7, 4:24] = frames[1, 14:18, 12:16] = 1.0  # a sheet's edge above a dot
    frames[2, 4:24, 4:6] = frames[2, 12:16, 14:18] = 1.0  # beside it
    frames[3, 4:24, 10:12] = frames[3, 4:6, 10:20] = 1.0  # an L: one piece
    got = split_ink(torch.from_numpy((frames - MEAN) / STD))
    assert got.tolist() == [False, True, True, False]


def test_what_a_floor_leaves_on_the_sheet_is_not_taken_for_the_digit():
    """Beside a floor along the edge of a photo, a dark line on the sheet that does not touch the
    border (a shadow's or a fold's edge) is erased: the digit is the strong ink nearest the middle."""
    got, want = photographed_on_a_floor("left", mark=(slice(60, 540), slice(110, 118)))
    assert got.box == want.box and got.pixels is not None and want.pixels is not None
    assert _overlap(got.pixels * STD + MEAN, want.pixels * STD + MEAN) > 0.9


def test_a_tight_crops_bar_along_the_edge_is_not_a_ruled_line():
    """A 7 cut at its ink: its bar, a little tilted, runs along the top edge and is inked across the
    image over only two or three rows, as a printed line is, and was erased with them. The half-inked
    rows that run on from it make it too thick for a line: the crop is framed as the same 7 with a margin."""
    img = Image.new("L", (120, 120), 235)
    ImageDraw.Draw(img).line([(30, 20), (90, 26), (50, 100)], fill=20, width=9)
    tight = img.crop(img.point(lambda v: 255 if v < 128 else 0).getbbox()).resize((64, 64), Image.BILINEAR)
    margin = Image.new("L", (100, 100), 235)
    margin.paste(tight, (18, 18))
    got, want = prepare(np.asarray(tight)), prepare(np.asarray(margin))
    assert got.pixels is not None and want.pixels is not None
    assert _overlap(got.pixels * STD + MEAN, want.pixels * STD + MEAN) > 0.95


def test_ruled_lines_along_two_edges_leave_a_digit_near_them_whole():
    """A cell cut a little askew, its rules along the left and bottom edges: the floor test must not
    take the left rule, which crosses the bottom's band, for depth of the bottom and erase the digit's
    foot with it."""
    plain = draw_digit(size=(60, 60), shape="zero", paper=220, box=(22, 24, 52, 53))
    ruled = plain.copy()
    ImageDraw.Draw(ruled).line([(1, 0), (4, 59)], fill=90, width=2)
    ImageDraw.Draw(ruled).line([(0, 58), (59, 55)], fill=90, width=2)
    got, want = prepare(grey(ruled)), prepare(grey(plain))
    assert got.pixels is not None and want.pixels is not None
    assert _overlap(got.pixels * STD + MEAN, want.pixels * STD + MEAN) > 0.9


def test_a_tight_zero_with_a_mark_inside_is_not_taken_for_a_floor():
    """Ink meeting all four edges, with a separate mark inside: a tight crop, not a tiled floor."""
    ring = draw_digit(size=(60, 60), shape="zero", box=(0, 0, 59, 59))
    marked = ring.copy()
    ImageDraw.Draw(marked).line([(27, 26), (33, 34)], fill=20, width=4)
    got = prepare(grey(marked))
    assert got.pixels is not None
    assert _overlap(got.pixels * STD + MEAN, prepare(grey(ring)).pixels * STD + MEAN) > 0.8


def test_the_box_is_the_digits_place_in_the_image():
    zero = grey(draw_digit(size=(200, 150), box=(40, 30, 100, 120), shape="zero"))
    got = prepare(zero)
    left, top, right, bottom = got.box
    assert abs(left - 40) <= 3 and abs(top - 30) <= 3 and abs(right - 100) <= 3 and abs(bottom - 120) <= 3
    assert got.extent == bottom - top + 1
    assert prepare(np.full((50, 50), 0.9, dtype=np.float32)).box == (0, 0, 0, 0)


def test_a_photo_is_prepared_alike_alone_and_beside_a_slightly_larger_one():
    """Two photos whose sizes round to one canvas (267 and 270 px): the grids the paper and the clutter
    are measured on are sized by the canvas's group, not by the largest image in it."""
    from digitscan.preprocess import prepare_batch
    from digitscan.synth import cluttered_photo

    rng = np.random.default_rng(3)
    digit = np.zeros((28, 28), dtype=np.uint8)
    digit[6:22, 12:16] = 255  # a 1
    photos = [grey(cluttered_photo(digit, rng).resize((side, side))) for side in (267, 270)]
    batch = prepare_batch(photos)
    for k, photo in enumerate(photos):
        alone = prepare(photo)
        assert batch[k].box == alone.box and batch[k].inverted == alone.inverted
        np.testing.assert_allclose(batch[k].pixels, alone.pixels, atol=1e-3)  # float sums in another order


@pytest.mark.parametrize("radius", [1, 2, 5, 16, 40])
def test_spread_is_max_pooling_of_ink(radius):
    """The shifted-maxima stand-in for a stride-1 max pool (ink, labels: values not below 0) gives its
    numbers exactly, at the border too."""
    from digitscan.preprocess import spread

    torch.manual_seed(0)
    x = torch.rand(5, 1, 31, 44) * (torch.rand(5, 1, 31, 44) > 0.7)
    pooled = torch.nn.functional.max_pool2d(x, 2 * radius + 1, stride=1, padding=radius)
    assert torch.equal(spread(x, radius), pooled)
