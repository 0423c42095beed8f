"""Machine code as text, for reading what a kernel became: SASS of a cubin (``nvdisasm``)
and the host assembly of LLVM IR.

``nvdisasm`` comes with a CUDA toolkit or the ``nvidia-cuda-nvdisasm`` wheel (the ``nvrtc``
extra installs it); it is looked for on ``PATH`` first, then in that wheel. Without it
:func:`sass` says how to get it instead of failing: SASS is for reading, never needed to run.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path


class DisassemblerMissing(RuntimeError):
    """``nvdisasm`` is neither on ``PATH`` nor installed as a wheel."""


def nvdisasm_path() -> Path | None:
    """Where ``nvdisasm`` is, or ``None``."""
    found = shutil.which("nvdisasm")
    if found:
        return Path(found)
    try:
        import nvidia
    except ImportError:
        return None
    for root in nvidia.__path__:
        for sub in ("cu13/bin/nvdisasm", "cuda_nvdisasm/bin/nvdisasm"):
            candidate = Path(root) / sub
            if candidate.is_file():
                return candidate
    return None


_LINE_INFO = re.compile(r'^(\s*)//## File "[^"]*", line (\d+)(.*)$', re.MULTILINE)


def sass(cubin: bytes, source: str | None = None) -> str:
    """The SASS of ``cubin``, one instruction a line. Where the cubin was built with
    ``-lineinfo``, each run of instructions is headed by the line of CUDA C it came from:
    given that ``source``, the heading quotes the line itself (and tegula's CUDA C says
    which DSL line each statement is from)."""
    tool = nvdisasm_path()
    if tool is None:
        raise DisassemblerMissing(
            "nvdisasm not found: install the CUDA toolkit or `pip install nvidia-cuda-nvdisasm` "
            "(the `nvrtc` extra) to read SASS")
    with tempfile.TemporaryDirectory(prefix="tegula-sass-") as folder:
        path = Path(folder) / "kernel.cubin"
        path.write_bytes(cubin)
        done = subprocess.run([str(tool), "--print-code", "--print-line-info", str(path)],
                              capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"nvdisasm failed ({done.returncode}): {done.stderr.strip()[:500]}")
    if source is None:
        return done.stdout
    lines = source.splitlines()

    def quote(match: re.Match[str]) -> str:
        number = int(match.group(2))
        text = lines[number - 1].strip() if 0 < number <= len(lines) else ""
        return f"{match.group(1)}// line {number}: {text}{match.group(3)}"

    return _LINE_INFO.sub(quote, done.stdout)


def host_assembly(ir_text: str, *, opt_level: int = 3) -> str:
    """The assembly this host's JIT makes of ``ir_text``: the same optimization and target
    as :func:`tegula.runtime.cpu_jit.compile_llvm_ir`, printed instead of assembled."""
    from .cpu_jit import host_target_machine, optimized_module

    machine = host_target_machine(opt_level)
    return str(machine.emit_assembly(optimized_module(ir_text, machine, opt_level)))
