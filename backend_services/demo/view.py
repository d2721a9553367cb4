"""The demo's terminal view: phases, events and one live status line.

On a terminal the status line is redrawn in place and events scroll above it, in colour
(unless ``NO_COLOR`` is set). Otherwise (a pipe, a file, CI) output is plain text: events
as lines, and the status line at most every ``plain_status_every`` seconds.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Sequence
from typing import Final, TextIO

__all__ = ["ProgressView", "format_table", "use_colour"]

_ANSI: Final = re.compile(r"\x1b\[[0-9;]*m")

_CODES: Final = {
    "bold": "1",
    "dim": "2",
    "red": "31",
    "green": "32",
    "yellow": "33",
    "blue": "34",
    "magenta": "35",
    "cyan": "36",
}


def use_colour(stream: TextIO) -> bool:
    """Colours only on a terminal, and never when ``NO_COLOR`` is set."""
    if os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    """Plain aligned columns (left for text, right for numbers)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(_width(r[i]) for r in cells) for i in range(len(headers))]
    numeric = [
        all(_is_number(_ANSI.sub("", str(row[i]))) for row in rows) if rows else False
        for i in range(len(headers))
    ]

    def pad(cell: str, width: int, right: bool) -> str:
        fill = " " * (width - _width(cell))
        return fill + cell if right else cell + fill

    def line(row: Sequence[str]) -> str:
        return "  ".join(
            pad(cell, w, num) for cell, w, num in zip(row, widths, numeric, strict=True)
        ).rstrip()

    out = [line(cells[0]), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells[1:]]
    return out


def _width(text: str) -> int:
    """Visible width (colour codes take no room)."""
    return len(_ANSI.sub("", text))


def _is_number(value: object) -> bool:
    if isinstance(value, (int, float)):
        return True
    text = str(value).rstrip("%").replace(",", "")
    for suffix in (" ms", " s", "/s"):
        text = text.removesuffix(suffix)
    try:
        float(text)
    except ValueError:
        return False
    return True


class ProgressView:
    """Writes the demo's progress to ``stream`` (stdout)."""

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        live: bool | None = None,
        colour: bool | None = None,
        plain_status_every: float = 5.0,
    ) -> None:
        self.stream = stream or sys.stdout
        isatty = getattr(self.stream, "isatty", None)
        self.live = bool(isatty and isatty()) if live is None else live
        self.colour = use_colour(self.stream) if colour is None else colour
        self.plain_status_every = plain_status_every
        self._status = ""
        self._last_plain_status = 0.0

    def paint(self, text: str, *styles: str) -> str:
        if not self.colour or not styles:
            return text
        codes = ";".join(_CODES[s] for s in styles)
        return f"\x1b[{codes}m{text}\x1b[0m"

    def _clear_status(self) -> None:
        if self.live and self._status:
            self.stream.write("\r\x1b[2K")

    def _redraw_status(self) -> None:
        if self.live and self._status:
            self.stream.write(self._status)
        self.stream.flush()

    def line(self, text: str = "") -> None:
        """A line of output (above the live status line)."""
        self._clear_status()
        self.stream.write(text + "\n")
        self._redraw_status()

    def title(self, text: str) -> None:
        self.line(self.paint(text, "bold"))

    def phase(self, number: int, title: str) -> None:
        self.line()
        self.line(self.paint(f"{number}. {title}", "bold", "cyan"))

    def event(self, t: float, text: str, style: str = "") -> None:
        stamp = self.paint(f"{t:6.1f}s", "dim")
        self.line(f"  {stamp}  {self.paint(text, style) if style else text}")

    def status(self, t: float, text: str) -> None:
        """The live status line: redrawn on a terminal, printed now and then otherwise."""
        if self.live:
            self._clear_status()
            line = f"  {t:6.1f}s  " + text
            width = shutil.get_terminal_size((100, 24)).columns - 1
            if _width(line) > width:  # a wrapped line could not be redrawn in place
                line = _ANSI.sub("", line)[: max(0, width - 1)] + "…"
            self._status = line
            self._redraw_status()
        elif t - self._last_plain_status >= self.plain_status_every:
            self._last_plain_status = t
            self.stream.write(f"  {t:6.1f}s  [status] {text}\n")
            self.stream.flush()

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
        for text in format_table(headers, rows):
            self.line("  " + text)

    def close(self) -> None:
        """Remove the status line (the summary follows as plain lines)."""
        self._clear_status()
        self._status = ""
        self.stream.flush()
