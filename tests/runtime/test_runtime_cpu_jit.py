"""The CPU back end's runtime: hand-written IR in the CPU ABI, compiled, linked, launched."""

from __future__ import annotations

import ctypes
import os
import threading
import time

import numpy as np
import pytest
from tegula.runtime import KernelSpec, ParamSpec, load_cpu_kernel
from tegula.runtime.cpu_jit import (
    CpuCompileError,
    compile_llvm_ir,
    launch_cpu,
    load_object,
    num_threads,
)
from tegula.runtime.errors import LaunchError

# vadd(x: f32[N], y: f32[N], z: f32[N]); block b adds elements [256 b, 256 b + 256) ∩ [0, N).
VADD_IR = """
define void @vadd(ptr %argv, i64 %begin, i64 %end) {
entry:
  %x.i = load i64, ptr %argv
  %y.p = getelementptr i64, ptr %argv, i64 1
  %y.i = load i64, ptr %y.p
  %z.p = getelementptr i64, ptr %argv, i64 2
  %z.i = load i64, ptr %z.p
  %n.p = getelementptr i64, ptr %argv, i64 3
  %n = load i64, ptr %n.p
  %x = inttoptr i64 %x.i to ptr
  %y = inttoptr i64 %y.i to ptr
  %z = inttoptr i64 %z.i to ptr
  %any = icmp slt i64 %begin, %end
  br i1 %any, label %block, label %done
block:
  %b = phi i64 [ %begin, %entry ], [ %b.next, %block.end ]
  %lo = mul i64 %b, 256
  br label %elem
elem:
  %t = phi i64 [ 0, %block ], [ %t.next, %elem.next ]
  %i = add i64 %lo, %t
  %inside = icmp slt i64 %i, %n
  br i1 %inside, label %body, label %elem.next
body:
  %xa = getelementptr float, ptr %x, i64 %i
  %ya = getelementptr float, ptr %y, i64 %i
  %za = getelementptr float, ptr %z, i64 %i
  %xv = load float, ptr %xa
  %yv = load float, ptr %ya
  %s = fadd float %xv, %yv
  store float %s, ptr %za
  br label %elem.next
elem.next:
  %t.next = add i64 %t, 1
  %more = icmp slt i64 %t.next, 256
  br i1 %more, label %elem, label %block.end
block.end:
  %b.next = add i64 %b, 1
  %again = icmp slt i64 %b.next, %end
  br i1 %again, label %block, label %done
done:
  ret void
}
"""

# record(out: f64[N], scale: f64): out[b] += scale * b + gx * gy * gz for each block b, so a
# block run twice, or never, shows; the f64 scalar and the grid come through argv.
RECORD_IR = """
define void @record(ptr %argv, i64 %begin, i64 %end) {
entry:
  %out.i = load i64, ptr %argv
  %out = inttoptr i64 %out.i to ptr
  %s.p = getelementptr i64, ptr %argv, i64 1
  %s.bits = load i64, ptr %s.p
  %scale = bitcast i64 %s.bits to double
  %gx.p = getelementptr i64, ptr %argv, i64 3
  %gx = load i64, ptr %gx.p
  %gy.p = getelementptr i64, ptr %argv, i64 4
  %gy = load i64, ptr %gy.p
  %gz.p = getelementptr i64, ptr %argv, i64 5
  %gz = load i64, ptr %gz.p
  %gxy = mul i64 %gx, %gy
  %g = mul i64 %gxy, %gz
  %gf = sitofp i64 %g to double
  %any = icmp slt i64 %begin, %end
  br i1 %any, label %loop, label %done
loop:
  %b = phi i64 [ %begin, %entry ], [ %b.next, %loop ]
  %bf = sitofp i64 %b to double
  %v0 = fmul double %bf, %scale
  %v = fadd double %v0, %gf
  %p = getelementptr double, ptr %out, i64 %b
  %old = load double, ptr %p
  %new = fadd double %old, %v
  store double %new, ptr %p
  %b.next = add i64 %b, 1
  %more = icmp slt i64 %b.next, %end
  br i1 %more, label %loop, label %done
done:
  ret void
}
"""


def vadd_spec() -> KernelSpec:
    return KernelSpec(
        name="vadd",
        params=tuple(ParamSpec(n, "tensor", "f32", ("N",), writes=n == "z") for n in "xyz"),
        symbols=("N",),
        grid=("cdiv(N, 256)", "1", "1"),
        block_threads=256,
        smem_bytes=0,
        target="cpu",
    )


@pytest.fixture(scope="module")
def vadd_object() -> bytes:
    return compile_llvm_ir(VADD_IR)


def test_object_code_is_host_native(vadd_object: bytes) -> None:
    assert vadd_object[:4] in (b"\x7fELF", b"\xcf\xfa\xed\xfe", b"\x64\x86")  # ELF/Mach-O/COFF


@pytest.mark.parametrize("n", [1, 255, 256, 257, 1000, 65_537])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_vadd_numerics(vadd_object: bytes, n: int, threads: int) -> None:
    kernel = load_cpu_kernel(vadd_spec(), vadd_object, source=VADD_IR, threads=threads)
    rng = np.random.default_rng()
    x = rng.standard_normal(n).astype(np.float32)
    y = rng.standard_normal(n).astype(np.float32)
    z = np.full(n + 1, np.nan, np.float32)  # poisoned, with a guard element past the end
    kernel(x, y, z[:n])
    np.testing.assert_array_equal(z[:n], x + y)  # one f32 add: exact
    assert np.isnan(z[n])


@pytest.mark.parametrize("grid", [(1, 1, 1), (7, 3, 5), (13, 1, 2), (2, 17, 1)])
@pytest.mark.parametrize("threads", [1, 2, 4, 16])
def test_every_block_runs_exactly_once(grid: tuple[int, int, int], threads: int) -> None:
    fn = load_object(compile_llvm_ir(RECORD_IR, opt_level=1), "record")
    total = grid[0] * grid[1] * grid[2]
    rng = np.random.default_rng()
    base = rng.standard_normal(total)
    out = base.copy()
    scale = float(rng.uniform(1, 2))
    scale_bits = int(np.float64(scale).view(np.int64))
    launch_cpu(fn, [out.ctypes.data, scale_bits, total], grid, threads=threads)
    np.testing.assert_allclose(out, base + scale * np.arange(total) + total, rtol=1e-15)


def test_kernel_passes_float_scalars_as_double_bits() -> None:
    spec = KernelSpec(
        name="record",
        params=(ParamSpec("out", "tensor", "f64", ("N",), writes=True),
                ParamSpec("scale", "scalar", "f32")),
        symbols=("N",),
        grid=("7", "N // 35", "5"),
        block_threads=1,
        smem_bytes=0,
        target="cpu",
    )
    kernel = load_cpu_kernel(spec, compile_llvm_ir(RECORD_IR))
    base = np.random.default_rng().standard_normal(105)
    out = base.copy()
    kernel(out, 0.75)
    np.testing.assert_allclose(out, base + 0.75 * np.arange(105) + 105, rtol=1e-15)


def test_bad_ir_is_a_compile_error() -> None:
    with pytest.raises(CpuCompileError, match="LLVM rejected"):
        compile_llvm_ir("define void @f( {")


def test_missing_symbol_is_a_launch_error(vadd_object: bytes) -> None:
    with pytest.raises(LaunchError, match="no function named 'vsub'"):
        load_object(vadd_object, "vsub")


def test_thread_count_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEGULA_NUM_THREADS", "3")
    assert num_threads() == 3
    monkeypatch.setenv("TEGULA_NUM_THREADS", "zero")
    with pytest.raises(ValueError, match="TEGULA_NUM_THREADS='zero'"):
        num_threads()


# who(out: i64[N], pause_us: i64): out[b] = the pthread that ran block b, after a pause (so
# that every thread of the team has time to claim a chunk).
WHO_IR = """
declare i64 @pthread_self()
declare i32 @usleep(i32)

define void @who(ptr %argv, i64 %begin, i64 %end) {
entry:
  %out.i = load i64, ptr %argv
  %out = inttoptr i64 %out.i to ptr
  %pause.p = getelementptr i64, ptr %argv, i64 1
  %pause = load i64, ptr %pause.p
  %pause.32 = trunc i64 %pause to i32
  %any = icmp slt i64 %begin, %end
  br i1 %any, label %loop, label %done
loop:
  %b = phi i64 [ %begin, %entry ], [ %b.next, %loop ]
  %self = call i64 @pthread_self()
  %p = getelementptr i64, ptr %out, i64 %b
  store i64 %self, ptr %p
  %slept = call i32 @usleep(i32 %pause.32)
  %b.next = add i64 %b, 1
  %more = icmp slt i64 %b.next, %end
  br i1 %more, label %loop, label %done
done:
  ret void
}
"""


@pytest.fixture(scope="module")
def who() -> object:
    return load_object(compile_llvm_ir(WHO_IR, opt_level=1), "who")


def test_the_calling_thread_runs_blocks_beside_its_helpers(who: object) -> None:
    """The caller takes chunks too, and the helpers take the rest (each block records the
    thread that ran it)."""
    out = np.zeros(64, np.int64)
    launch_cpu(who, [out.ctypes.data, 2000], (64, 1, 1), threads=3)  # type: ignore[arg-type]
    ran_by = set(out.tolist())
    assert 0 not in ran_by  # every block ran
    assert threading.get_ident() in ran_by
    assert len(ran_by) >= 2


def test_back_to_back_launches_run_every_block_once() -> None:
    """Launches that follow one another while the helpers are still busy with (or spinning
    after) the last one: a helper late from one launch takes no chunk of the next."""
    fn = load_object(compile_llvm_ir(RECORD_IR, opt_level=1), "record")
    rng = np.random.default_rng()
    for launch in range(300):
        threads = 1 + launch % 4
        total = int(rng.integers(1, 40))
        out = np.zeros(total)
        launch_cpu(fn, [out.ctypes.data, 0, total], (total, 1, 1), threads=threads)
        np.testing.assert_array_equal(out, np.full(total, float(total)))


def test_launches_from_several_python_threads_at_once() -> None:
    """A launch that finds the team busy runs its blocks in its own thread."""
    fn = load_object(compile_llvm_ir(RECORD_IR, opt_level=1), "record")
    failures: list[str] = []

    def launch_many(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _ in range(100):
            total = int(rng.integers(1, 64))
            out = np.zeros(total)
            launch_cpu(fn, [out.ctypes.data, 0, total], (total, 1, 1), threads=2)
            if not np.array_equal(out, np.full(total, float(total))):
                failures.append(f"seed {seed}: {out}")

    callers = [threading.Thread(target=launch_many, args=(seed,)) for seed in range(4)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    assert failures == []


def test_helpers_that_sleep_at_once_still_join(monkeypatch: pytest.MonkeyPatch,
                                               who: object) -> None:
    """With no spinning, helpers sleep between launches and are woken by the next one."""
    from tegula.runtime import cpu_team

    monkeypatch.setenv("TEGULA_SPIN_US", "0")
    team = cpu_team.CpuTeam(2)  # a team of its own, made under the setting
    assert team._spins == 0
    fn = who
    for _ in range(3):
        out = np.zeros(48, np.int64)
        slots = (ctypes.c_int64 * 5)(out.ctypes.data, 1000, 48, 1, 1)
        assert team.run(fn.address, slots, 48, 3)  # type: ignore[attr-defined]
        assert 0 not in set(out.tolist())
    deadline = time.monotonic() + 5.0  # both helpers go back to sleep after each launch
    while team._sleepers < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert team._sleepers == 2


def test_spin_time_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from tegula.runtime.cpu_team import DEFAULT_SPIN_US, spin_us

    monkeypatch.delenv("TEGULA_SPIN_US", raising=False)
    assert spin_us() == DEFAULT_SPIN_US
    monkeypatch.setenv("TEGULA_SPIN_US", "150")
    assert spin_us() == 150
    monkeypatch.setenv("TEGULA_SPIN_US", "-1")
    with pytest.raises(ValueError, match="must be at least 0"):
        spin_us()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_launches_without_the_parents_helpers() -> None:
    fn = load_object(compile_llvm_ir(RECORD_IR, opt_level=1), "record")
    out = np.zeros(8)
    launch_cpu(fn, [out.ctypes.data, 0, 8], (8, 1, 1), threads=2)  # the parent's team exists
    pid = os.fork()
    if pid == 0:  # the child: a fresh team, or the caller alone, must finish the launch
        child = np.zeros(8)
        launch_cpu(fn, [child.ctypes.data, 0, 8], (8, 1, 1), threads=2)
        os._exit(0 if np.array_equal(child, np.full(8, 8.0)) else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
