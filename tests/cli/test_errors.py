"""Bad input gets one line naming the problem, exit code 2, and never loses what was there."""

import json
import shutil
import subprocess
import sys

import pytest

from iree_glm.cli import compile as compile_cli
from iree_glm.cli import run as run_cli_module
from iree_glm.errors import run_cli

from ..helpers import write_hf_checkpoint


def _compile(argv, capsys):
    code = run_cli(compile_cli.main, [str(a) for a in argv])
    return code, capsys.readouterr().err.strip().splitlines()


def _run(argv, capsys):
    code = run_cli(run_cli_module.main, [str(a) for a in argv])
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.fixture()
def ckpt(tmp_path):
    path = tmp_path / "ckpt"
    write_hf_checkpoint("glm4_gqa", path)
    return path


def _assert_one_line_error(code, lines, *needles):
    errors = [line for line in lines if line.startswith("error:")]
    assert code == 2 and len(errors) == 1, lines
    for needle in needles:
        assert needle in errors[0], errors[0]


def test_missing_checkpoint(tmp_path, capsys):
    code, lines = _compile([tmp_path / "nope", "-o", tmp_path / "out"], capsys)
    _assert_one_line_error(code, lines, "nope", "does not exist")
    assert not (tmp_path / "out").exists()


def test_unknown_architecture(ckpt, tmp_path, capsys):
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["architectures"] = ["BertForMaskedLM"]
    (ckpt / "config.json").write_text(json.dumps(cfg))
    code, lines = _compile([ckpt, "-o", tmp_path / "out"], capsys)
    _assert_one_line_error(code, lines, "config.json", "unsupported architecture", "BertForMaskedLM")


def test_missing_weights_and_pickles_refused(ckpt, tmp_path, capsys):
    (ckpt / "model.safetensors").rename(ckpt / "pytorch_model.bin")
    code, lines = _compile([ckpt, "-o", tmp_path / "out"], capsys)
    _assert_one_line_error(code, lines, "safetensors only")


def test_corrupt_safetensors(ckpt, tmp_path, capsys):
    (ckpt / "model.safetensors").write_bytes(b"\x00garbage" * 64)
    code, lines = _compile([ckpt, "-o", tmp_path / "out"], capsys)
    _assert_one_line_error(code, lines, "model.safetensors", "cannot read safetensors")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no partial folder left behind


def test_config_that_does_not_fit_the_weights(ckpt, tmp_path, capsys):
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["intermediate_size"] = 128
    (ckpt / "config.json").write_text(json.dumps(cfg))
    code, lines = _compile([ckpt, "-o", tmp_path / "out"], capsys)
    _assert_one_line_error(code, lines, "gate_up_proj", "shape")


def test_unwritable_output(ckpt, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    code, lines = _compile([ckpt, "-o", blocker / "bundle"], capsys)
    _assert_one_line_error(code, lines, "cannot create")
    code, lines = _compile([ckpt, "-o", blocker], capsys)
    _assert_one_line_error(code, lines, "refusing to overwrite")
    assert blocker.read_text() == "x"


def test_failed_compile_keeps_existing_bundle(glm4_bundle, tmp_path, capsys):
    out = tmp_path / "bundle"
    shutil.copytree(glm4_bundle, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    code, lines = _compile([broken, "-o", out], capsys)
    _assert_one_line_error(code, lines, "config.json", "not valid JSON")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_bundle_missing_file_and_wrong_hash(glm4_bundle, tmp_path, capsys):
    out = tmp_path / "bundle"
    shutil.copytree(glm4_bundle, out)
    (out / "tokenizer.json").unlink()
    code, lines = _run([out, "--prompt-ids", "1,2"], capsys)
    _assert_one_line_error(code, lines, "tokenizer.json", "missing")
    shutil.copy(glm4_bundle / "tokenizer.json", out / "tokenizer.json")
    with open(out / "weights.irpa", "r+b") as f:
        f.seek(-8, 2)
        f.write(b"\x01" * 8)
    code, lines = _run([out, "--prompt-ids", "1,2"], capsys)
    _assert_one_line_error(code, lines, "weights.irpa", "sha256")


def test_a_tokenizer_that_turns_the_prompt_into_nothing_is_named(glm4_bundle, tmp_path, capsys):
    """A tokenizer.json whose vocabulary lacks the text's characters (and has no unknown token)
    drops them: the error names the tokenizer, not an empty prompt the user did not send."""
    out = tmp_path / "bundle"
    shutil.copytree(glm4_bundle, out)
    (out / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}}))
    code, lines = _run([out, "--prompt", "hi", "--no-verify"], capsys)
    _assert_one_line_error(code, lines, "tokenizer.json", "turns the prompt (2 characters) into no tokens")


@pytest.mark.parametrize("name", ["weights.irpa", "model.vmfb"])
def test_truncated_bundle_file_without_verification(glm4_bundle, tmp_path, capsys, name):
    """--no-verify skips the hashes, not the errors: a cut-off archive or module is one line naming it."""
    out = tmp_path / "bundle"
    shutil.copytree(glm4_bundle, out)
    with open(out / name, "r+b") as f:
        f.truncate(1000 if name == "weights.irpa" else (out / name).stat().st_size // 2)
    code, lines = _run([out, "--prompt-ids", "1,2", "--no-verify"], capsys)
    _assert_one_line_error(code, lines, name, "not a readable")


def test_prompt_too_long_and_ids_outside_vocab(glm4_bundle, capsys):
    code, lines = _run([glm4_bundle, "--prompt-ids", ",".join(["5"] * 200)], capsys)
    _assert_one_line_error(code, lines, "200 tokens", "128")
    code, lines = _run([glm4_bundle, "--prompt-ids", "1,2,5000"], capsys)
    _assert_one_line_error(code, lines, "5000", "outside the vocabulary")
    code, lines = _run([glm4_bundle, "--prompt-ids", "1,x"], capsys)
    _assert_one_line_error(code, lines, "--prompt-ids")


def test_checkpoint_without_tokenizer_compiles_and_needs_ids(tmp_path, capsys):
    path = tmp_path / "notok"
    write_hf_checkpoint("llama_mqa", path, tokenizer=False)
    code, lines = _compile([path, "-o", tmp_path / "b", "--max-context", "32"], capsys)
    assert code == 0 and any("no tokenizer.json" in line for line in lines)
    code, lines = _run([tmp_path / "b", "--prompt", "hi"], capsys)
    _assert_one_line_error(code, lines, "no tokenizer")
    code, _ = _run([tmp_path / "b", "--prompt-ids", "1,2,3", "--max-new-tokens", "4"], capsys)
    assert code == 0


def test_real_process_exit_code(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "iree_glm.compile", str(tmp_path / "missing"), "-o", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error:") and len(proc.stderr.strip().splitlines()) == 1


def test_an_export_cache_that_cannot_be_a_folder_is_one_line(ckpt, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    code, lines = _compile([ckpt, "-o", tmp_path / "out", "--export-cache", blocker / "cache"], capsys)
    _assert_one_line_error(code, lines, str(blocker / "cache"), "export cache")
    assert not (tmp_path / "out").exists()
