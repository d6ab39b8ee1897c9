"""MLIR -> IREE VM bytecode (.vmfb) with iree-compile, phased when our passes rewrite the input IR.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iree_glm.compiler.exact_rows import CONFIGURATIONS_FLAG
from iree_glm.compiler.target import Target, merge_flags
from iree_glm.errors import UserError
from iree_glm.passes.pipeline import PassPipeline


class CompileError(UserError):
    """iree-compile refused the module (often flags a profile passed through): one line, and the full log."""


@dataclass(frozen=True)
class Compiled:
    flags: list[str]  # what iree-compile was given
    pass_results: dict[str, Any]  # what our passes did, by pass name (passes/pipeline.py)


def compile_mlir(
    mlir_path: Path, vmfb_path: Path, target: Target, extra_flags: tuple[str, ...] = (), log_path: Path | None = None,
    pipeline: PassPipeline | None = None, configurations: Path | None = None,
) -> Compiled:
    """Compile an MLIR file (torch input dialect) to a .vmfb.

    With a `pipeline` of our passes, compilation is phased: `--compile-to=input`, the passes
    rewrite the linalg IR, then `--compile-from=input` finishes. On failure the compiler's full
    diagnostics go to `log_path` (if given) and the error names the first diagnostic, so a
    failure is one readable line. `configurations`: a folder to dump the executables' lowering
    configurations into (compiler/exact_rows.py reads them; not a flag the bundle records).
    """
    import iree.compiler as ic

    args = list(merge_flags(target.compile_args(), extra_flags))
    dump = [f"{CONFIGURATIONS_FLAG}={configurations}"] if configurations is not None else []
    results: dict[str, Any] = {}
    try:
        if not pipeline:
            ic.compile_file(str(mlir_path), output_file=str(vmfb_path), input_type="torch", extra_args=[*args, *dump])
        else:
            with tempfile.TemporaryDirectory(prefix="iree_glm-phases-") as work:
                source, rewritten = Path(work) / "input.mlirbc", Path(work) / "rewritten.mlirbc"
                ic.compile_file(str(mlir_path), output_file=str(source), input_type="torch", extra_args=[*args, "--compile-to=input"])
                results = pipeline.run_file(source, rewritten)
                ic.compile_file(str(rewritten), output_file=str(vmfb_path), extra_args=[*args, "--compile-from=input", *dump])
    except ic.CompilerToolError as e:
        errors = [line for line in str(e).splitlines() if "error:" in line]
        first = errors[0][:300] if errors else str(e)[:300]
        where = ""
        if log_path is not None:
            Path(log_path).write_text(str(e))
            where = f" (full log: {log_path})"
        raise CompileError(f"iree-compile failed for {mlir_path.name}: {first}{where}") from None
    if not Path(vmfb_path).is_file() or Path(vmfb_path).stat().st_size == 0:
        # iree-compile interrupted by a signal deletes its output and can still exit 0.
        raise UserError(f"iree-compile wrote no module for {mlir_path.name} (was it interrupted?)")
    return Compiled(args, results)
