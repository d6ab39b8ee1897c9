"""Numbers, text and pipes from the command line: one `error:` line and exit 2 (or a quiet
exit), never a traceback (issue #22 item 5)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from iree_glm.cli import compile as compile_cli
from iree_glm.cli import run as run_module
from iree_glm.errors import run_cli


@pytest.mark.parametrize("option, value, expected", [
    ("--temperature", "nan", "--temperature: expected a finite number, got nan"),
    ("--temperature", "inf", "--temperature: expected a finite number, got inf"),
    ("--temperature", "-1", "--temperature: -1.0 is below the minimum 0.0"),
    ("--top-p", "NaN", "--top-p: expected a finite number, got NaN"),
    ("--top-p", "2", "--top-p: 2.0 is above the maximum 1.0"),
    ("--top-k", "1.5", "--top-k: expected an integer, got '1.5'"),
    ("--seed", "-3", "--seed: -3 is below the minimum 0"),
    ("--max-new-tokens", "-1", "--max-new-tokens: -1 is below the minimum 0"),
    ("--prefix-cache-mb", "nan", "--prefix-cache-mb: expected a finite number, got nan"),
    ("--prefill-chunk", "-5", "--prefill-chunk: -5 is below the minimum 0"),
])
def test_run_numbers_are_checked_in_one_line(tmp_path, capsys, option, value, expected):
    code = run_cli(run_module.main, [str(tmp_path), "--prompt-ids", "1,2", option, value])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and lines == [f"error: {expected}"]


@pytest.mark.parametrize("option, value", [("--max-context", "1e9"), ("--max-context", "1"), ("--group-size", "0")])
def test_compile_numbers_are_checked_in_one_line(tmp_path, capsys, option, value):
    code = run_cli(compile_cli.main, ["-o", str(tmp_path / "b"), option, value])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"error: {option}: ")
    assert not (tmp_path / "b").exists()


def _run(bundle, *args: str | bytes, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "iree_glm.run", str(bundle), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def test_non_utf8_prompt_text_is_one_line(glm4_bundle):
    proc = _run(glm4_bundle, "--prompt", b"caf\xe9 \xff", "--max-new-tokens", "2")
    out, err = proc.communicate(timeout=120)
    lines = err.decode().strip().splitlines()
    assert proc.returncode == 2 and lines == ["error: the prompt text is not valid UTF-8 (at character 3)"]


def test_output_closed_early_exits_quietly(glm4_bundle):
    """`run ... | head -c1`: the reader leaves after one byte; no BrokenPipeError traceback."""
    proc = _run(glm4_bundle, "--prompt-ids", "5,17,99", "--max-new-tokens", "40")
    assert proc.stdout.read(1)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err


@pytest.mark.parametrize("ids", ["1,,2", "1,2,", ",1", "1,x"])
def test_prompt_ids_with_an_empty_or_bad_item_are_refused(tmp_path, capsys, ids):
    """An empty item is a typo (a lost id), not something to skip: the prompt would change silently."""
    code = run_cli(run_module.main, [str(tmp_path), "--prompt-ids", ids])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and lines == [f"error: --prompt-ids must be comma-separated integers (got '{ids}')"]
