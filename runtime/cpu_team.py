"""The thread team that runs a CPU launch's blocks: native helpers that wait by spinning.

A launch splits its blocks into chunks; the calling thread and ``threads - 1`` helpers claim
chunks from a shared counter until none is left. Handing the chunks to Python threads that
sleep between launches cost each launch a wake-up, about 30 us on two Zen 4 cores: half of
a 128-row W4A16 GEMV (docs/runtime.md). So the helpers wait as OpenMP runtimes do:
each runs a native loop (compiled once per process from the IR below, called through ctypes
so it holds no GIL) that spins on the launch counter for a while after its last chunk, then
returns to Python and sleeps on a condition until the next launch wakes it. While it spins,
a launch costs a store and a few cache-line transfers.

The calling thread never depends on a helper to make progress: it claims chunks like any
helper and only waits for chunks already claimed. A launch with no helper awake (after a long
idle time, in a forked child, or while another Python thread is launching) still completes.

The shared state is eight 64-bit words (``_STATE``). A claim is a compare-and-swap on the
``next`` word, which carries the launch's number in its high half, so a helper still in an
earlier launch cannot take (or skip) a chunk of the next one.
"""

from __future__ import annotations

import ctypes
import os
import platform
import threading
import time
from functools import cache

# The team state: eight 64-bit words, laid out in _TEAM_IR's first comment; word 0 counts
# launches.
_STATE = ctypes.c_int64 * 8
_GENERATION = 0

# How long a helper spins after its last chunk before it sleeps: long enough to span the
# Python between two back-to-back launches, short enough not to hold a core for long.
# ``$TEGULA_SPIN_US`` sets it; 0 makes helpers sleep at once (each launch pays a wake-up).
DEFAULT_SPIN_US = 2000

_TEAM_IR = """
; Launch state, i64 words: 0 launch number, 1 next chunk (launch number << 32 | index),
; 2 chunks done, 3 kernel address, 4 argv address, 5 blocks, 6 chunks.

define i64 @tegula_team_wait(ptr %state, i64 %seen, i64 %spins) {
entry:
  br label %poll
poll:
  %spun = phi i64 [ 0, %entry ], [ %spun.next, %again ]
  %launch = load atomic i64, ptr %state acquire, align 8
  %changed = icmp ne i64 %launch, %seen
  br i1 %changed, label %out, label %check
check:
  %more = icmp slt i64 %spun, %spins
  br i1 %more, label %again, label %out
again:
  {relax}
  %spun.next = add i64 %spun, 1
  br label %poll
out:
  ret i64 %launch
}

; Claim and run chunks of launch %launch until none is left.
define void @tegula_team_work(ptr %state, i64 %launch) {
entry:
  {fields}
  %epoch = shl i64 %launch, 32
  br label %claim
claim:
  %next = load atomic i64, ptr %next.at acquire, align 8
  %next.epoch = and i64 %next, -4294967296
  %same = icmp eq i64 %next.epoch, %epoch
  br i1 %same, label %count, label %out
count:
  %chunk = and i64 %next, 4294967295
  %chunks = load atomic i64, ptr %chunks.at monotonic, align 8
  %left = icmp slt i64 %chunk, %chunks
  br i1 %left, label %take, label %out
take:
  %next.1 = add i64 %next, 1
  %swap = cmpxchg ptr %next.at, i64 %next, i64 %next.1 acq_rel acquire
  %taken = extractvalue { i64, i1 } %swap, 1
  br i1 %taken, label %run, label %claim
run:
  %kernel.bits = load atomic i64, ptr %kernel.at monotonic, align 8
  %argv.bits = load atomic i64, ptr %argv.at monotonic, align 8
  %blocks = load atomic i64, ptr %blocks.at monotonic, align 8
  %kernel = inttoptr i64 %kernel.bits to ptr
  %argv = inttoptr i64 %argv.bits to ptr
  %first = mul i64 %chunk, %blocks
  %begin = udiv i64 %first, %chunks
  %chunk.1 = add i64 %chunk, 1
  %last = mul i64 %chunk.1, %blocks
  %end = udiv i64 %last, %chunks
  call void %kernel(ptr %argv, i64 %begin, i64 %end)
  %ignored = atomicrmw add ptr %done.at, i64 1 release
  br label %claim
out:
  ret void
}

; A helper: run each new launch's chunks; return the last launch seen once none has come
; for %spins polls.
define i64 @tegula_team_serve(ptr %state, i64 %seen, i64 %spins) {
entry:
  br label %wait
wait:
  %last = phi i64 [ %seen, %entry ], [ %launch, %work ]
  %launch = call i64 @tegula_team_wait(ptr %state, i64 %last, i64 %spins)
  %idle = icmp eq i64 %launch, %last
  br i1 %idle, label %out, label %work
work:
  %epoch = and i64 %launch, 4294967295
  call void @tegula_team_work(ptr %state, i64 %epoch)
  br label %wait
out:
  ret i64 %last
}

; The calling thread: publish a launch (its fields before its chunk counter, the counter
; before the launch number), run chunks, then wait until every chunk is done.
define void @tegula_team_launch(ptr %state, i64 %kernel, i64 %argv, i64 %blocks,
                                i64 %chunks) {
entry:
  {fields}
  %previous = load atomic i64, ptr %state monotonic, align 8
  %launch = add i64 %previous, 1
  %epoch = and i64 %launch, 4294967295
  store atomic i64 %kernel, ptr %kernel.at monotonic, align 8
  store atomic i64 %argv, ptr %argv.at monotonic, align 8
  store atomic i64 %blocks, ptr %blocks.at monotonic, align 8
  store atomic i64 %chunks, ptr %chunks.at monotonic, align 8
  store atomic i64 0, ptr %done.at monotonic, align 8
  %first = shl i64 %epoch, 32
  store atomic i64 %first, ptr %next.at release, align 8
  store atomic i64 %launch, ptr %state release, align 8
  ret void
}

define void @tegula_team_join(ptr %state, i64 %chunks) {
entry:
  %done.at = getelementptr i64, ptr %state, i64 2
  %launch = load atomic i64, ptr %state monotonic, align 8
  %epoch = and i64 %launch, 4294967295
  call void @tegula_team_work(ptr %state, i64 %epoch)
  br label %poll
poll:
  %done = load atomic i64, ptr %done.at acquire, align 8
  %all = icmp sge i64 %done, %chunks
  br i1 %all, label %out, label %again
again:
  {relax}
  br label %poll
out:
  ret void
}
{declare}
"""

# Pointers to the state's words, named as in _TEAM_IR's first comment.
_FIELDS = """
  %next.at = getelementptr i64, ptr %state, i64 1
  %done.at = getelementptr i64, ptr %state, i64 2
  %kernel.at = getelementptr i64, ptr %state, i64 3
  %argv.at = getelementptr i64, ptr %state, i64 4
  %blocks.at = getelementptr i64, ptr %state, i64 5
  %chunks.at = getelementptr i64, ptr %state, i64 6
"""

# The instruction a spinning thread runs between polls, so it yields the core's shared
# resources to a sibling hyperthread (and, on x86, leaves the loop without a memory-order
# flush when the word changes).
_RELAX = {
    "x86_64": ("call void @llvm.x86.sse2.pause()", "declare void @llvm.x86.sse2.pause()"),
    "AMD64": ("call void @llvm.x86.sse2.pause()", "declare void @llvm.x86.sse2.pause()"),
    "aarch64": ("call void @llvm.aarch64.hint(i32 1)", "declare void @llvm.aarch64.hint(i32)"),
    "arm64": ("call void @llvm.aarch64.hint(i32 1)", "declare void @llvm.aarch64.hint(i32)"),
}

_WAIT = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64)
_LAUNCH = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                           ctypes.c_int64, ctypes.c_int64)
_JOIN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64)


class _NativeTeam:
    """The team's native functions, linked into this process once."""

    def __init__(self) -> None:
        from .cpu_jit import compile_llvm_ir, load_functions

        relax, declare = _RELAX.get(platform.machine(), ("", ""))
        text = (_TEAM_IR.replace("{fields}", _FIELDS.strip()).replace("{relax}", relax)
                .replace("{declare}", declare))
        obj = compile_llvm_ir(text, opt_level=2)
        self._functions = load_functions(obj, ("tegula_team_wait", "tegula_team_serve",
                                               "tegula_team_launch", "tegula_team_join"))
        wait, serve, launch, join = (f.address for f in self._functions)
        self.wait = _WAIT(wait)
        self.serve = _WAIT(serve)
        self.launch = _LAUNCH(launch)
        self.join = _JOIN(join)

    def polls_per_us(self) -> float:
        """How many polls of an unchanging word take a microsecond here (measured once)."""
        word = _STATE()
        polls = 100_000
        start = time.perf_counter()
        self.wait(ctypes.addressof(word), 0, polls)
        return polls / max((time.perf_counter() - start) * 1e6, 1.0)


@cache
def _native() -> _NativeTeam:
    return _NativeTeam()


def _setting(name: str, default: int, minimum: int) -> int:
    """The integer environment variable ``name`` (at least ``minimum``), else ``default``."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} is not an integer") from None
    if value < minimum:
        raise ValueError(f"{name}={value} must be at least {minimum}")
    return value


def num_threads() -> int:
    """Threads of a CPU launch, the caller's included: ``$TEGULA_NUM_THREADS`` or the CPU
    count."""
    return _setting("TEGULA_NUM_THREADS", os.cpu_count() or 1, 1)


def spin_us() -> int:
    """How long helpers spin after a launch: ``$TEGULA_SPIN_US`` or the default."""
    return _setting("TEGULA_SPIN_US", DEFAULT_SPIN_US, 0)


class CpuTeam:
    """``helpers`` threads that join the calling thread in each launch."""

    def __init__(self, helpers: int) -> None:
        self.helpers = helpers
        self._native = _native()
        self._state = _STATE()
        self._address = ctypes.addressof(self._state)
        self._spins = int(spin_us() * self._native.polls_per_us())
        self._busy = threading.Lock()  # one launch at a time
        self._wake = threading.Condition()
        self._sleepers = 0
        for index in range(helpers):
            threading.Thread(target=self._serve, name=f"tegula-cpu-{index}",
                             daemon=True).start()

    def run(self, kernel_address: int, argv: ctypes.Array, blocks: int, chunks: int) -> bool:
        """Run blocks ``[0, blocks)`` in ``chunks`` chunks of the kernel at
        ``kernel_address``; False (nothing run) when another thread's launch holds the team."""
        if not self._busy.acquire(blocking=False):
            return False
        try:
            self._native.launch(self._address, kernel_address, ctypes.addressof(argv), blocks,
                                chunks)
            if self._sleepers:
                with self._wake:
                    self._wake.notify_all()
            self._native.join(self._address, chunks)
        finally:
            self._busy.release()
        return True

    def _serve(self) -> None:
        seen = self._state[_GENERATION]
        while True:
            seen = self._native.serve(self._address, seen, self._spins)
            with self._wake:
                self._sleepers += 1
                while self._state[_GENERATION] == seen:
                    self._wake.wait()
                self._sleepers -= 1


_teams_lock = threading.Lock()
_teams: dict[int, CpuTeam] = {}


def team(helpers: int) -> CpuTeam:
    """The process's team with ``helpers`` helper threads (made on first use)."""
    with _teams_lock:
        found = _teams.get(helpers)
        if found is None:
            found = _teams[helpers] = CpuTeam(helpers)
        return found


def _forget_teams() -> None:
    # A forked child has none of the parent's threads (and maybe a lock they held).
    global _teams_lock
    _teams.clear()
    _teams_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_teams)
