"""MLIR -> IREE VM bytecode (.vmfb) with iree-compile, phased when our passes rewrite the input IR.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable, Sequence

from iree_glm.compiler.target import Target, merge_flags
from iree_glm.errors import UserError

# A rewrite of input-phase IR between two compiler phases: (source file, destination file).
InputPass = Callable[[Path, Path], object]


def compile_mlir(
    mlir_path: Path, vmfb_path: Path, target: Target, extra_flags: tuple[str, ...] = (), log_path: Path | None = None,
    input_passes: Sequence[InputPass] = (),
) -> list[str]:
    """Compile an MLIR file (torch input dialect) to a .vmfb; returns the flags used.

    With `input_passes`, compilation is phased: `--compile-to=input`, each pass rewrites the
    linalg IR file in turn, then `--compile-from=input` finishes. On failure the compiler's
    full diagnostics go to `log_path` (if given) and the error names the first diagnostic,
    so a failure is one readable line.
    """
    import iree.compiler as ic

    args = list(merge_flags(target.compile_args(), extra_flags))
    try:
        if not input_passes:
            ic.compile_file(str(mlir_path), output_file=str(vmfb_path), input_type="torch", extra_args=args)
        else:
            with tempfile.TemporaryDirectory(prefix="iree_glm-phases-") as work:
                current = Path(work) / "input-0.mlirbc"
                ic.compile_file(str(mlir_path), output_file=str(current), input_type="torch", extra_args=[*args, "--compile-to=input"])
                for i, rewrite in enumerate(input_passes, 1):
                    rewritten = Path(work) / f"input-{i}.mlirbc"
                    rewrite(current, rewritten)
                    current = rewritten
                ic.compile_file(str(current), output_file=str(vmfb_path), extra_args=[*args, "--compile-from=input"])
    except ic.CompilerToolError as e:
        errors = [line for line in str(e).splitlines() if "error:" in line]
        first = errors[0][:300] if errors else str(e)[:300]
        where = ""
        if log_path is not None:
            Path(log_path).write_text(str(e))
            where = f" (full log: {log_path})"
        raise RuntimeError(f"iree-compile failed for {mlir_path.name}: {first}{where}") from None
    if not Path(vmfb_path).is_file() or Path(vmfb_path).stat().st_size == 0:
        # iree-compile interrupted by a signal deletes its output and can still exit 0.
        raise UserError(f"iree-compile wrote no module for {mlir_path.name} (was it interrupted?)")
    return args
