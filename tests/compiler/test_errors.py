"""The error corpus: each bad program in error_corpus/ with its exact expected message."""

from pathlib import Path

import pytest
from tegula.compiler.diagnostics import DSLError, name_hint
from tegula.compiler.frontend import build_tile_kernel
from tegula.compiler.parser import parse

CORPUS = Path(__file__).with_name("error_corpus")
CASES = sorted(CORPUS.glob("*.tg"))


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 35
    assert all(case.with_suffix(".expected").exists() for case in CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.stem)
def test_error_message(case: Path) -> None:
    expected = case.with_suffix(".expected").read_text()
    with pytest.raises(DSLError) as info:
        program = parse(case.read_text(), case.name)
        for kernel in program.kernels:
            build_tile_kernel(program, kernel.name)
    assert str(info.value) + "\n" == expected
    assert info.value.__cause__ is None or isinstance(info.value.__cause__, DSLError)


def test_a_wrong_name_gets_the_closest_one_or_the_list() -> None:
    assert name_hint("BNN", ["BM", "BN"], "it has") == "; did you mean 'BN'?"
    assert name_hint("zzz", ["BM", "BN"], "it has") == " (it has: BM, BN)"
    assert name_hint("zzz", [], "it has") == " (it has: none)"
    assert name_hint("zzz", ["a", "b"], "kernels", "'a' or 'b'") == " (kernels: 'a' or 'b')"
