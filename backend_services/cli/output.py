"""How the command-line tool writes: human tables or ``--json``, colour only on a terminal."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from ..demo.view import format_table, use_colour

__all__ = ["Output"]

_STYLES = {
    "healthy": "32",
    "closed": "32",
    "normal": "32",
    "ok": "32",
    "starting": "33",
    "half_open": "33",
    "partial": "33",
    "minimal": "33",
    "unknown": "2",
    "unhealthy": "31",
    "open": "31",
    "forced_open": "31",
    "emergency": "31",
    "offline": "31",
}


class Output:
    """One command's output channel."""

    def __init__(
        self,
        *,
        json_mode: bool = False,
        colour: bool | None = None,
        stream: TextIO | None = None,
    ) -> None:
        self.stream = stream or sys.stdout
        self.json_mode = json_mode
        self.colour = (use_colour(self.stream) if colour is None else colour) and not json_mode

    def state(self, value: object) -> str:
        """A state word, coloured by meaning on a terminal."""
        text = str(getattr(value, "value", value))
        code = _STYLES.get(text)
        if not self.colour or code is None:
            return text
        return f"\x1b[{code}m{text}\x1b[0m"

    def json(self, data: Any) -> None:
        self.stream.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
        self.stream.flush()

    def json_line(self, data: Any) -> None:
        self.stream.write(json.dumps(data, sort_keys=True, default=str) + "\n")
        self.stream.flush()

    def line(self, text: str = "") -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
        if not rows:
            self.line("(none)")
            return
        for text in format_table(headers, rows):
            self.line(text)

    def emit(
        self,
        data: Any,
        headers: Sequence[str] | None = None,
        rows: Sequence[Sequence[object]] | None = None,
        text: str | None = None,
    ) -> None:
        """``data`` as JSON in ``--json`` mode; else a table or a line of text."""
        if self.json_mode:
            self.json(data)
        elif headers is not None and rows is not None:
            self.table(headers, rows)
        elif text is not None:
            self.line(text)
        else:
            self.json(data)
