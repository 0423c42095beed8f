"""The default pass pipeline, in one place.

Importing this module registers every pass with the pass manager.
"""

from __future__ import annotations

from tegula.ir.loop import LoopKernel

from . import dce as _dce  # noqa: F401  (registers the pass)
from . import layout_inference as _layout_inference  # noqa: F401
from . import lower as _lower  # noqa: F401
from . import narrow as _narrow  # noqa: F401
from .manager import PassContext, register_pass
from .simplify import simplify_kernel


@register_pass("simplify", "fold and simplify index arithmetic; drop dead branches")
def simplify(kernel: LoopKernel, ctx: PassContext) -> LoopKernel:
    return simplify_kernel(kernel)


DEFAULT_PIPELINE: tuple[str, ...] = (
    "infer-layouts",
    "eliminate-dead-code",
    "lower-to-loops",
    "simplify",
    "narrow-indices",
)
