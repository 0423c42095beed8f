"""The ``tegula`` command line (also ``python -m tegula``).

    tegula run FILE.tg|DIR [--target T] [--size M=4096 ...]
    tegula dump FILE.tg [--kernel K] [--stage S|all] [--out DIR] [--target T] [--size N=8192]
                [--const WT=i2]
    tegula layout EXPR [--png FILE]

Bad input (a DSL error, an unknown target, a wrong size) prints one clear message and exits
with status 2; a kernel whose numbers disagree with its reference exits with status 1.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from rich.console import Console
from rich.table import Table
from tegula.ir.target import Target, TargetError

from .diagnostics import DSLError

V = TypeVar("V")

# Tables stay readable when the output is a pipe or a log (no terminal width to ask).
console = Console(highlight=False, width=shutil.get_terminal_size((140, 24)).columns)
err_console = Console(stderr=True, highlight=False)


def assignments(pairs: list[str], option: str, convert: Callable[[str, str], V]
                ) -> dict[str, V]:
    """``["M=4096", "N=128"]`` as a dict, each value ``convert(name, text)``; errors name
    ``option``."""
    out: dict[str, V] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.isidentifier():
            raise ValueError(f"{option} expects NAME=VALUE, got {pair!r}")
        out[name] = convert(name, value)
    return out


def int_assignments(pairs: list[str], option: str) -> dict[str, int]:
    """``["M=4096", "N=128"]`` as ``{"M": 4096, "N": 128}``; errors name ``option``."""

    def integer(name: str, text: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{option} {name}: {text!r} is not an integer") from None

    return assignments(pairs, option, integer)


def _sizes(pairs: list[str]) -> dict[str, int]:
    return int_assignments(pairs, "--size")


def const_assignments(pairs: list[str]) -> dict[str, bool | int | float | str]:
    """``["BN=64", "WT=i2", "WS=true"]`` as ``{"BN": 64, "WT": "i2", "WS": True}``: a number
    or a DSL boolean where the text is one, else the text (a dtype's name; the front end
    checks each against its param)."""
    return assignments(pairs, "--const", lambda _name, text: _number(text))


def _number(text: str) -> bool | int | float | str:
    if text in ("true", "false"):
        return text == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def cmd_run(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from .checking import check_file, example_files
    from .targets import resolve_target

    target = resolve_target(args.target)
    files = example_files(args.path)
    if not files:
        raise FileNotFoundError(f"no .tg files with a companion .py under {args.path}")
    table = Table(title=f"tegula run on {target}")
    for col in ("kernel", "target", "sizes", "max abs err", "rel err", "check", "time (ms)"):
        table.add_column(col, justify="right" if col.startswith(("max", "time")) else "left")
    failed = 0
    for f in files:
        for r in check_file(f, target, _sizes(args.size), repeats=args.repeats):
            status = "no reference" if r.passed is None else ("ok" if r.passed else "MISMATCH")
            failed += r.passed is False
            table.add_row(
                # An entry's name may hold brackets ("quant_gemm_w[i2]"), not markup.
                escape(f"{Path(r.file).stem}.{r.kernel}"),
                r.target,
                " ".join(f"{k}={v}" for k, v in r.sizes.items()),
                "-" if r.max_abs_error is None else f"{r.max_abs_error:.2e}",
                "-" if r.max_rel_error is None else f"{r.max_rel_error:.2e}",
                status,
                f"{r.median_ms:.3f}",
            )
    console.print(table)
    return 1 if failed else 0


def cmd_dump(args: argparse.Namespace) -> int:
    from .api import read_source
    from .driver import generate_code, lower_kernel
    from .frontend import build_tile_kernel, declared_params, specialization_symbols
    from .parser import parse
    from .targets import resolve_target

    source = read_source(args.file)
    program = parse(source.text, source.filename)
    names = [k.name for k in program.kernels]
    if args.kernel:
        if args.kernel not in names:
            raise KeyError(
                f"{source.filename} has no kernel {args.kernel!r} (kernels: {', '.join(names)})"
            )
        names = [args.kernel]
    targets = ["cuda:sm_90a", "cpu"] if args.target == "all" else [args.target]
    out_root = Path(args.out) if args.out else None
    symbols = _sizes(args.size)
    constants = const_assignments(args.const)
    for name in names:
        kernel = program.kernel(name)
        assert kernel is not None
        # Each kernel takes the constants it declares (as tg.compile gives them out).
        pinned = {k: v for k, v in constants.items() if k in declared_params(kernel)}
        wanted = specialization_symbols(kernel, pinned)
        given = {k: v for k, v in symbols.items() if k in wanted}
        if missing := [s for s in wanted if s not in given]:
            raise ValueError(
                f"kernel {name}'s compile-time params depend on size symbol"
                f"{'s' if len(missing) > 1 else ''} {', '.join(missing)}; "
                f"give {' '.join(f'--size {s}=...' for s in missing)}"
            )
        for tname in targets:
            target = resolve_target(tname)
            tile = build_tile_kernel(program, name, pinned, given, target.constants())
            folder = None
            if out_root is not None:
                folder = out_root / name / ("cuda" if target.is_cuda else "cpu")
            loop, ctx = lower_kernel(tile, target, dump_dir=folder, keep_dumps=True)
            code = generate_code(loop, target)
            stages = [*ctx.dumps, ("codegen", code)]
            if args.binary:
                stages += machine_code_stages(code, name, target)
            if folder is not None:
                for index, (stage, text) in enumerate(stages[len(ctx.dumps):],
                                                      start=len(ctx.dumps)):
                    suffix = _SUFFIX[stage, target.is_cuda]
                    (folder / f"{index:02d}-{stage}.{suffix}").write_text(text)
                console.print(f"[bold]{name}[/] on {target}: {len(stages)} files in {folder}")
                continue
            for stage, text in stages:
                if args.stage not in ("all", stage, stage.split("-", 1)[-1]):
                    continue
                console.rule(f"{name} · {target} · {stage}")
                console.print(text, markup=False)
    return 0


# File suffixes of the stages after the passes, by (stage, CUDA?).
_SUFFIX = {
    ("codegen", True): "cu", ("codegen", False): "ll", ("ptx", True): "ptx",
    ("ptxas", True): "txt", ("sass", True): "sass", ("asm", False): "s",
}  # fmt: skip


def machine_code_stages(code: str, name: str, target: Target) -> list[tuple[str, str]]:
    """What ``--binary`` adds: on CUDA the PTX, ptxas's resource report and the SASS (with
    line info; a note instead where ``nvdisasm`` is missing), on the CPU the host assembly.
    Building also checks that the code compiles."""
    if not target.is_cuda:
        from tegula.runtime.disasm import host_assembly

        return [("asm", host_assembly(code))]
    from tegula.runtime.disasm import DisassemblerMissing, sass
    from tegula.runtime.nvrtc import compile_cuda

    binary = compile_cuda(code, name, target.arch, options=["-lineinfo"])
    stages = [("ptx", binary.ptx), ("ptxas", binary.log.strip())]
    if binary.cubin is not None:
        try:
            stages.append(("sass", sass(binary.cubin, code)))
        except DisassemblerMissing as missing:
            stages.append(("sass", f"// {missing}"))
    return stages


def cmd_layout(args: argparse.Namespace) -> int:
    from .layout_view import describe

    console.print(describe(args.expr, png=args.png), markup=False)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tegula", description="A tile-language tensor compiler.")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="compile and run kernels on random inputs, check, time")
    run.add_argument("path", help="a .tg file or a folder of them")
    run.add_argument("--target", default="auto", help="cpu, cuda, cuda:sm_XX or auto")
    run.add_argument(
        "--size",
        action="append",
        default=[],
        metavar="NAME=N",
        help="a size symbol's value (repeatable)",
    )
    run.add_argument("--repeats", type=int, default=5, help="timed runs per kernel")
    run.set_defaults(fn=cmd_run)

    dump = sub.add_parser("dump", help="print or write the IR after every pass and the code")
    dump.add_argument("file")
    dump.add_argument("--kernel")
    dump.add_argument("--stage", default="all",
                      help="a pass name, 'codegen', with --binary 'ptx', 'ptxas', 'sass' or "
                           "'asm', or all")
    dump.add_argument("--out", help="write one file per pass under this folder")
    dump.add_argument(
        "--target", default="all", help="cpu, cuda, cuda:sm_XX, auto, or all (cuda:sm_90a and cpu)"
    )
    dump.add_argument(
        "--binary",
        action="store_true",
        help="also build the binary and show it: PTX, ptxas's report and SASS on CUDA, the "
        "host assembly on the CPU",
    )
    dump.add_argument(
        "--size",
        action="append",
        default=[],
        metavar="NAME=N",
        help="a size symbol's value, for params whose defaults depend on it (repeatable)",
    )
    dump.add_argument(
        "--const",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a compile-time param's value, a number or a dtype (WT=i2; repeatable)",
    )
    dump.set_defaults(fn=cmd_dump)

    lay = sub.add_parser("layout", help="print a layout as a table; draw it with --png")
    lay.add_argument(
        "expr", help="e.g. '(4,8):(8,1)', 'spatial(4,8)*local(2,2)', 'Sw<3,4,3> o (8,64):(64,1)', "
        "'fragment(mma_m16n8k16_f16_f32, c)'"
    )
    lay.add_argument("--png", help="write a picture of the layout to this file")
    lay.add_argument("--target", default="cpu", help="accepted for uniformity; layouts need none")
    lay.set_defaults(fn=cmd_layout)
    from .tuning.cli import add_tune_parser

    add_tune_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except DSLError as exc:
        err_console.print(str(exc), markup=False)
        return 2
    except (TargetError, FileNotFoundError, KeyError, ValueError, TypeError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        err_console.print(f"error: {message}", markup=False)
        return 2


if __name__ == "__main__":
    sys.exit(main())
