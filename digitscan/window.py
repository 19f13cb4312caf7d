"""The window of `digitscan watch --show`: the newest frame with the box of the digit found and the
reading drawn on it, as the seed tutorials draw them; q, Escape or closing the window ends the watch.

Tk (Python's own tkinter) and Pillow's ImageTk: nothing to install but a display.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from .dataset import OK
from .errors import DigitscanError
from .watch import Latest, Seen

WINDOW_SIDE = 800
"""Frames are shown this many pixels on their longer side."""
BOX_MARGIN = 0.02
"""The box drawn round the digit is wider than its ink by this share of the frame's shorter side."""
REDRAW_MS = 30
"""How often the window looks for a newer frame or reading, in milliseconds."""
BOX_COLOUR = (40, 220, 90)
TEXT_HEIGHT = 12
"""The reading's text is a twelfth of the shown frame's height (16 px at least)."""


class DisplayError(DigitscanError):
    """No window can be opened: no display, or a Python without tkinter."""


def annotate(frame: Image.Image, seen: Seen | None) -> Image.Image:
    """The frame, WINDOW_SIDE on its longer side, with the digit's box and the reading drawn on it."""
    scale = WINDOW_SIDE / max(frame.size)
    image = frame.convert("RGB").resize((max(1, round(frame.width * scale)), max(1, round(frame.height * scale))))
    if seen is None:
        return image
    draw = ImageDraw.Draw(image)
    if seen.status == OK and seen.box is not None:
        margin = BOX_MARGIN * min(image.size)
        left, top, right, bottom = (v * scale for v in seen.box)
        draw.rectangle([max(0, left - margin), max(0, top - margin), min(image.width - 1, right + margin),
                        min(image.height - 1, bottom + margin)], outline=BOX_COLOUR, width=3)
    label = f"{seen.digit}  {seen.confidence:.2f}" if seen.status == OK else seen.status
    font = ImageFont.load_default(size=max(16, image.height // TEXT_HEIGHT))
    draw.text((10, 6), label, fill=BOX_COLOUR, font=font, stroke_width=2, stroke_fill=(0, 0, 0))
    return image


class Window:
    """A Tk window, opened at once (DisplayError when it cannot be); `run` shows frames until it closes."""

    def __init__(self, title: str) -> None:
        try:
            import tkinter

            from PIL import ImageTk
        except ImportError:
            raise DisplayError("--show needs Python's tkinter (on Debian and Ubuntu: apt install python3-tk)") from None
        try:
            self.root = tkinter.Tk()
        except tkinter.TclError as exc:
            raise DisplayError(f"--show needs a display ({exc})") from None
        self.photo_image = ImageTk.PhotoImage
        self.root.title(title)
        self.label = tkinter.Label(self.root)
        self.label.pack()
        self.closed = False
        self.drawn: tuple[Image.Image | None, Seen | None] = (None, None)
        self.photo: Any = None
        for key in ("<KeyPress-q>", "<KeyPress-Q>", "<Escape>"):
            self.root.bind(key, self.close)
        self.root.protocol("WM_DELETE_WINDOW", self.close)

    def close(self, event: object = None) -> None:
        self.closed = True

    def run(self, latest: Latest, ended: Callable[[], bool]) -> None:
        """Show the newest frame and reading until the window is closed or `ended()`."""

        def tick() -> None:
            if self.closed or ended():
                self.root.destroy()
                return
            frame, seen = latest.frame, latest.seen
            if frame is not None and (frame is not self.drawn[0] or seen is not self.drawn[1]):
                self.photo = self.photo_image(annotate(frame, seen))
                self.label.configure(image=self.photo)
                self.drawn = (frame, seen)
            self.root.after(REDRAW_MS, tick)

        self.root.after(0, tick)
        self.root.mainloop()


def show(title: str) -> Callable[[Latest, Callable[[], bool]], None]:
    """A window for `watch.watch`: opened titled `title` once the source and the model are ready."""
    return lambda latest, ended: Window(title).run(latest, ended)
