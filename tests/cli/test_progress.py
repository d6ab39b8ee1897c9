"""Compile progress: a redrawn bar on a terminal, plain lines (no carriage returns) in a log."""

import io
import subprocess
import sys

from iree_glm.cli.progress import StepProgress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_log_gets_one_line_per_step():
    log = io.StringIO()
    progress = StepProgress("compile", 2, log)
    for step in ("load weights", "export to MLIR", "a note past the total"):
        progress(step)
    progress.close()
    assert "\r" not in log.getvalue()
    assert log.getvalue().splitlines() == ["compile: load weights", "compile: export to MLIR", "compile: a note past the total"]


def test_terminal_gets_a_bar():
    term = _Terminal()
    progress = StepProgress("compile", 2, term)
    progress("load weights")
    progress("export to MLIR")
    progress.close()
    assert "\r" in term.getvalue() and "2/2" in term.getvalue()


def test_compile_cli_log_has_no_carriage_returns(glm4_checkpoint, tmp_path):
    # A group of 64 fails after the first step (hidden 64): progress and error, without a whole build.
    proc = subprocess.run([sys.executable, "-m", "iree_glm.compile", str(glm4_checkpoint[0]), "-o", str(tmp_path / "b"),
                           "--quant", "int4", "--group-size", "64"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "\r" not in proc.stderr
    assert "compile: load weights" in proc.stderr.splitlines(), proc.stderr
