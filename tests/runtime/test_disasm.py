"""``tegula dump --binary``: the machine code a kernel became, as text (SASS with its CUDA
lines quoted, PTX and ptxas's report; the host assembly on the CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tegula.compiler import cli
from tegula.runtime import disasm
from tegula.runtime.nvrtc import nvrtc_available

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
VECTOR_ADD = EXAMPLES / "vector_add.tg"

needs_nvrtc = pytest.mark.skipif(not nvrtc_available(), reason="NVRTC is not installed")


def test_cpu_binary_shows_the_host_assembly(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["dump", str(VECTOR_ADD), "--target", "cpu", "--binary",
                     "--stage", "asm"]) == 0
    out = capsys.readouterr().out
    assert "vector_add:" in out and "ret" in out


@needs_nvrtc
def test_cuda_binary_files_are_ptx_ptxas_report_and_sass(tmp_path: Path) -> None:
    if disasm.nvdisasm_path() is None:
        pytest.skip("nvdisasm is not installed (pip install nvidia-cuda-nvdisasm)")
    assert cli.main(["dump", str(VECTOR_ADD), "--target", "cuda:sm_90a", "--binary",
                     "--out", str(tmp_path)]) == 0
    folder = tmp_path / "vector_add" / "cuda"
    [ptx] = folder.glob("*-ptx.ptx")
    [report] = folder.glob("*-ptxas.txt")
    [sass] = folder.glob("*-sass.sass")
    assert ".entry vector_add" in ptx.read_text()
    assert "registers" in report.read_text()
    text = sass.read_text()
    assert "LDG" in text and "EXIT" in text  # real instructions
    # Line info is kept and each run quotes its line of CUDA C, not a file path.
    assert "// line " in text and "threadIdx.x" in text and "//## File" not in text


@needs_nvrtc
def test_without_nvdisasm_the_sass_stage_says_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(disasm, "nvdisasm_path", lambda: None)
    with pytest.raises(disasm.DisassemblerMissing, match="nvidia-cuda-nvdisasm"):
        disasm.sass(b"")
    assert cli.main(["dump", str(VECTOR_ADD), "--target", "cuda:sm_90a", "--binary",
                     "--stage", "sass"]) == 0
    assert "pip install nvidia-cuda-nvdisasm" in " ".join(capsys.readouterr().out.split())
