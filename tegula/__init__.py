"""tegula: a tile-language tensor compiler.

    import tegula as tg
    mod = tg.compile("examples/softmax.tg", target="cuda")
    mod.softmax(x, y)

The public face only: every name here is re-exported from a subpackage. Names load on first
use, so ``import tegula.runtime`` (what a loaded artifact needs) never pulls in the compiler.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> (module, attribute)
_EXPORTS: dict[str, tuple[str, str]] = {
    "compile": ("tegula.compiler.api", "compile"),
    "Module": ("tegula.compiler.api", "Module"),
    "check_file": ("tegula.compiler.checking", "check_file"),
    "DSLError": ("tegula.compiler.diagnostics", "DSLError"),
    "resolve_target": ("tegula.compiler.targets", "resolve_target"),
    "ArgumentError": ("tegula.runtime.errors", "ArgumentError"),
    "Layout": ("tegula.ir.layout", "Layout"),
    "Swizzle": ("tegula.ir.swizzle", "Swizzle"),
    "local": ("tegula.ir.tv_layout", "local"),
    "spatial": ("tegula.ir.tv_layout", "spatial"),
    "dtypes": ("tegula.ir", "dtypes"),
    "quant": ("tegula.runtime", "quant"),
    "lut_type": ("tegula.ir.dtypes", "lut_type"),
    "SpecializedKernel": ("tegula.compiler.specialize", "SpecializedKernel"),
    **{
        name: ("tegula.ir.dtypes", name)
        for name in ("f64", "f32", "f16", "bf16", "i8", "i16", "i32", "i64", "u8")
    },
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    try:
        module, attr = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'tegula' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
