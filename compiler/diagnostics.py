"""The one error type of the kernel language, and how it is shown.

Every problem with DSL input — syntax, names, types, shapes, compile-time parameters — is a
:class:`DSLError` that points at a place in the source::

    error: expected ')' or ',' but found 'warps'
     --> softmax.tg:3:13
      |
    3 |     grid (M warps 4
      |             ^^^^^
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from .syntax import SourceText, Span


class DSLError(Exception):
    """A problem in DSL source. ``line``/``column`` are 1-based (0 when no place applies);
    ``expected`` lists what the parser would have accepted, in words, for syntax errors."""

    def __init__(
        self,
        message: str,
        *,
        file: str = "<string>",
        line: int = 0,
        column: int = 0,
        end_column: int | None = None,
        source_line: str = "",
        expected: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.column = column
        self.end_column = end_column
        self.source_line = source_line
        self.expected = expected

    def __str__(self) -> str:
        head = f"error: {self.message}"
        if self.line <= 0:
            return f"{head}\n --> {self.file}"
        gutter = " " * len(str(self.line))
        width = max(1, (self.end_column or self.column + 1) - self.column)
        width = min(width, max(1, len(self.source_line) + 1 - self.column + 1))
        # Keep tabs in the padding so the caret lines up under tab-indented source.
        prefix = self.source_line[: self.column - 1]
        padding = "".join(c if c == "\t" else " " for c in prefix)
        return "\n".join(
            [
                head,
                f"{gutter}--> {self.file}:{self.line}:{self.column}",
                f"{gutter} |",
                f"{self.line} | {self.source_line}".rstrip(),
                f"{gutter} | {padding}{'^' * width}",
            ]
        )


def error_at(
    source: SourceText, span: Span | None, message: str, expected: tuple[str, ...] = ()
) -> DSLError:
    """A :class:`DSLError` pointing at ``span`` of ``source`` (the whole span's width on its
    first line)."""
    if span is None:
        return DSLError(message, file=source.filename, expected=expected)
    text = source.line(span.line)
    end = span.end_column if span.end_line == span.line else len(text) + 1
    return DSLError(
        message,
        file=source.filename,
        line=span.line,
        column=span.column,
        end_column=max(end, span.column + 1),
        source_line=text,
        expected=expected,
    )


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest candidate, or ``""``."""
    close = difflib.get_close_matches(word, sorted(set(candidates)), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def name_hint(word: str, candidates: Iterable[str], label: str, listed: str | None = None
              ) -> str:
    """What to tell a user who named ``word``: ``"; did you mean 'x'?"`` for a close
    candidate, else the candidates themselves, ``" (<label>: <listed>)"`` (``listed``
    defaults to the candidates joined by commas; ``none`` when there are none)."""
    names = list(candidates)
    if hint := did_you_mean(word, names):
        return hint
    return f" ({label}: {listed if listed is not None else ', '.join(names) or 'none'})"


def one_of(words: Iterable[str]) -> str:
    """``"a"``, ``"a or b"``, ``"a, b or c"``."""
    items = list(words)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " or " + items[-1]
