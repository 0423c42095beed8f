"""Register pressure of a Loop IR kernel, from the live ranges of its thread-local buffers.

On CUDA a thread's local buffers live in registers when every index into them is a constant
after unrolling (the lowering sees to that), so the registers a kernel needs are, to a first
approximation, the words of the local buffers that are live at once. Summing every buffer a
kernel declares overstates that badly: a pipelined loop has a fast and a slow version (an
``if`` on alignment) whose private buffers are never live together, and code generation
declares fragment buffers that one version never touches.

The estimate here numbers the statements in program order and gives each local buffer the
range from its first reference to its last. A loop's body runs many times, so a buffer
referenced both inside a loop and outside it (a carried accumulator, a register ring filled
before the loop) lives through the whole loop. The branches of an ``if`` come one after the
other, so what only one branch uses does not overlap what only the other does. The peak is
the most 32-bit words live at one statement.
"""

from __future__ import annotations

import math

from tegula.ir.loop import Buffer, For, LoopKernel, Scope, Stmt, stmt_buffers

__all__ = ["buffer_words", "live_ranges", "peak_local_words"]


def buffer_words(buffer: Buffer) -> int:
    """32-bit registers that hold ``buffer`` (sub-word elements packed, as ptxas packs them)."""
    return math.ceil((buffer.size or 0) * buffer.dtype.bits / 32)


def peak_local_words(kernel: LoopKernel) -> int:
    """The most 32-bit words of thread-local buffers live at any one statement."""
    events: list[tuple[int, int]] = []
    for buffer, (first, last) in live_ranges(kernel.body).items():
        words = buffer_words(buffer)
        events.append((first, words))
        events.append((last + 1, -words))
    peak = live = 0
    for _, delta in sorted(events):  # at one position, ends (negative) come before starts
        live += delta
        peak = max(peak, live)
    return peak


def live_ranges(body: Stmt) -> dict[Buffer, tuple[int, int]]:
    """Each local buffer referenced in ``body``: the first and last statement numbers of
    its live range (statements numbered in pre-order)."""
    ranges: dict[Buffer, tuple[int, int]] = {}
    loops: list[tuple[int, int]] = []
    position = 0

    def visit(stmt: Stmt) -> None:
        nonlocal position
        here = position
        position += 1
        for buffer in stmt_buffers(stmt):
            if buffer.scope is not Scope.LOCAL:
                continue
            first, last = ranges.get(buffer, (here, here))
            ranges[buffer] = (min(first, here), max(last, here))
        for child in stmt.children():
            visit(child)
        if isinstance(stmt, For):
            loops.append((here, position - 1))

    visit(body)
    # Inner loops first: stretching a range over an inner loop may carry it across an
    # outer loop's boundary, which that loop's turn then sees.
    for start, end in sorted(loops, key=lambda span: span[1] - span[0]):
        for buffer, (first, last) in ranges.items():
            crosses = first < start <= last or first <= end < last
            if crosses:
                ranges[buffer] = (min(first, start), max(last, end))
    return ranges
