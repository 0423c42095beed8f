"""C identifiers for Loop IR names: sanitized, unique among what is visible, never a keyword.

Names follow C's block scoping: a name declared in a block is taken until the block closes,
so sibling blocks may reuse one (two loops both called ``k``), while a nested block never
shadows an outer name (an inner ``acc`` becomes ``acc_1``).
"""

from __future__ import annotations

import re

from tegula.ir.loop import Var

_RESERVED = frozenset(
    (
        "alignas",
        "alignof",
        "and",
        "asm",
        "auto",
        "bool",
        "break",
        "case",
        "catch",
        "char",
        "class",
        "const",
        "constexpr",
        "const_cast",
        "continue",
        "decltype",
        "default",
        "delete",
        "do",
        "double",
        "dynamic_cast",
        "else",
        "enum",
        "explicit",
        "export",
        "extern",
        "false",
        "float",
        "for",
        "friend",
        "goto",
        "if",
        "inline",
        "int",
        "long",
        "mutable",
        "namespace",
        "new",
        "noexcept",
        "not",
        "nullptr",
        "operator",
        "or",
        "private",
        "protected",
        "public",
        "register",
        "reinterpret_cast",
        "restrict",
        "return",
        "short",
        "signed",
        "sizeof",
        "static",
        "static_assert",
        "static_cast",
        "struct",
        "switch",
        "template",
        "this",
        "throw",
        "true",
        "try",
        "typedef",
        "typeid",
        "typename",
        "union",
        "unsigned",
        "using",
        "virtual",
        "void",
        "volatile",
        "wchar_t",
        "while",
        "xor",
        "threadIdx",
        "blockIdx",
        "blockDim",
        "gridDim",
        "warpSize",
        "smem",
        "min",
        "max",
        "abs",
        "llabs",
        "floordiv",
        "floormod",
        "half",
        "float2",
        "float4",
        "double2",
        "uint2",
        "uint4",
        "dim3",
        "main",
        "printf",
    )
)


def sanitize(name: str) -> str:
    """``name`` as a C identifier: other characters become ``_``; no leading digit or ``_``."""
    text = re.sub(r"\W", "_", name, flags=re.ASCII).strip("_") or "v"
    if text[0].isdigit():
        text = "v" + text
    return text


class CNames:
    """Block-scoped naming of Vars (and a few fixed names) for one kernel."""

    def __init__(self) -> None:
        self._vars: list[dict[Var, str]] = [{}]
        self._taken: list[set[str]] = [set()]

    def fresh(self, hint: str) -> str:
        """Take a new name near ``hint`` in the innermost block."""
        base = sanitize(hint)
        if base in _RESERVED or base.startswith("__"):
            base += "_"
        name, n = base, 0
        while name in _RESERVED or any(name in taken for taken in self._taken):
            n += 1
            name = f"{base}_{n}"
        self._taken[-1].add(name)
        return name

    def bind(self, var: Var) -> str:
        name = self.fresh(var.name)
        self._vars[-1][var] = name
        return name

    def assign(self, var: Var, name: str) -> None:
        """Let ``var`` read as ``name``, taken earlier with :meth:`fresh`."""
        self._vars[-1][var] = name

    def lookup(self, var: Var) -> str:
        for scope in reversed(self._vars):
            if var in scope:
                return scope[var]
        raise KeyError(var.name)

    def push(self) -> None:
        self._vars.append({})
        self._taken.append(set())

    def pop(self) -> None:
        self._vars.pop()
        self._taken.pop()
