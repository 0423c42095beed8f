"""The DSL parser's LALR tables, shipped as JSON so a new process need not rebuild them.

Building an LALR(1) parser from ``grammar.lark`` costs lark a noticeable fraction of a second
(it also builds the parser for its own grammar language first). The tables depend only on the
grammar and the lark version, so they are computed once, written next to the grammar as
plain JSON (never pickle), and loaded by later processes. The file records a hash of the
grammar and the lark version it was made with; a mismatch means it is stale and the parser
is built from the grammar instead — a stale file is never trusted. ``python -m
tegula.compiler.parse_tables`` rewrites it; a test checks that the shipped file is current.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lark
from lark import Lark
from lark.grammar import Rule
from lark.lexer import TerminalDef

TABLES = Path(__file__).with_name("grammar.tables.json")


def grammar_key(grammar_text: str) -> str:
    """What the tables were made from: the grammar and the lark version."""
    return hashlib.sha256(f"{lark.__version__}\n{grammar_text}".encode()).hexdigest()


def _encode(o: Any) -> Any:
    """JSON for lark's serialized data: dicts with non-string keys and tuples kept exact."""
    if isinstance(o, dict):
        if all(isinstance(k, str) for k in o):
            return {k: _encode(v) for k, v in o.items()}
        return {"__pairs__": [[_encode(k), _encode(v)] for k, v in o.items()]}
    if isinstance(o, tuple):
        return {"__tuple__": [_encode(x) for x in o]}
    if isinstance(o, list):
        return [_encode(x) for x in o]
    if o is None or isinstance(o, str | int | float | bool):
        return o
    raise TypeError(f"cannot store {type(o).__name__} in the parse tables")


def _decode_object(o: dict[str, Any]) -> Any:
    """``json.loads``' object hook: the parser calls it for each object, innermost first, so
    lists and scalars are never walked in Python (a third of a cold compile's table load)."""
    if "__pairs__" in o:
        return dict(o["__pairs__"])  # a tuple key is one already (innermost first)
    if "__tuple__" in o:
        return tuple(o["__tuple__"])
    return o


def dump_tables(parser: Lark, grammar_text: str, path: Path = TABLES) -> None:
    data, memo = parser.memo_serialize([TerminalDef, Rule])
    # The post-lexer is code, not data: the loader passes it again.
    data["options"] = {k: v for k, v in data["options"].items() if k != "postlex"}
    payload = {"key": grammar_key(grammar_text), "data": _encode(data), "memo": _encode(memo)}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, separators=(",", ":"), sort_keys=True))
    tmp.replace(path)


def load_tables(grammar_text: str, postlex: object, path: Path = TABLES) -> Lark | None:
    """The parser from the shipped tables, or None when they are missing, stale or unreadable."""
    try:
        payload = json.loads(path.read_text(), object_hook=_decode_object)
        if payload.get("key") != grammar_key(grammar_text):
            return None
        parser = Lark.__new__(Lark)
        parser._load({"data": payload["data"], "memo": payload["memo"]}, postlex=postlex)
        return parser
    except Exception:  # any damage at all: build from the grammar instead of trusting it
        return None


def build_or_load(grammar_text: str, postlex: object, build: Callable[[], Lark]) -> Lark:
    return load_tables(grammar_text, postlex) or build()


if __name__ == "__main__":
    from . import parser as dsl_parser

    text = dsl_parser._GRAMMAR.read_text()
    dump_tables(dsl_parser._build_lark(text), text)
    print(f"wrote {TABLES}")
