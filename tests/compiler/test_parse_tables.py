"""The shipped LALR tables: current for the grammar, equivalent to building, never trusted stale."""

from __future__ import annotations

import json
from pathlib import Path

from tegula.compiler import parser as dsl_parser
from tegula.compiler.parse_tables import TABLES, dump_tables, load_tables

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_shipped_tables_match_the_grammar() -> None:
    text = dsl_parser._GRAMMAR.read_text()
    assert load_tables(text, dsl_parser._Newlines()) is not None, (
        "compiler/grammar.tables.json is stale: run `python -m tegula.compiler.parse_tables`"
    )


def test_loaded_tables_parse_like_a_freshly_built_parser() -> None:
    text = dsl_parser._GRAMMAR.read_text()
    built = dsl_parser._build_lark(text)
    loaded = load_tables(text, dsl_parser._Newlines())
    assert loaded is not None
    sources = [p.read_text() for p in sorted(EXAMPLES.glob("*.tg"))]
    assert sources
    for source in sources:
        assert loaded.parse(source) == built.parse(source)


def test_stale_or_damaged_tables_are_not_used(tmp_path: Path) -> None:
    text = dsl_parser._GRAMMAR.read_text()
    path = tmp_path / "tables.json"
    dump_tables(dsl_parser._build_lark(text), text, path)
    assert load_tables(text, dsl_parser._Newlines(), path) is not None
    # A grammar change makes them stale.
    assert load_tables(text + "\n// changed\n", dsl_parser._Newlines(), path) is None
    # A damaged file is refused, not trusted.
    payload = json.loads(path.read_text())
    payload["data"] = {"broken": True}
    path.write_text(json.dumps(payload))
    assert load_tables(text, dsl_parser._Newlines(), path) is None
    path.write_text("{not json")
    assert load_tables(text, dsl_parser._Newlines(), path) is None
    assert TABLES.name == "grammar.tables.json"
