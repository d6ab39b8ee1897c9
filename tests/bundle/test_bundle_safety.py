"""Compile never deletes what it did not write, never reports a bundle without its module, and
bundles run from read-only storage with files readable as the user's umask allows."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from iree_glm.cli import compile as compile_cli
from iree_glm.bundle.manifest import read_manifest
from iree_glm.errors import run_cli

from ..helpers import write_hf_checkpoint

PROMPT = [5, 17, 99, 3, 42, 7]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("safety") / "ckpt"
    write_hf_checkpoint("glm4_gqa", path)
    return path


def _compile(argv, capsys):
    code = run_cli(compile_cli.main, [str(a) for a in argv])
    return code, [l for l in capsys.readouterr().err.splitlines() if l.startswith("error:")]


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_folder_with_a_stray_manifest_is_not_replaced(ckpt, tmp_path, capsys):
    app = tmp_path / "app"
    (app / "src").mkdir(parents=True)
    (app / "manifest.json").write_text("{}")
    (app / "src" / "main.js").write_text("keep")
    before = _tree(app)
    code, errors = _compile([ckpt, "-o", app, "--max-context", "32"], capsys)
    assert code == 2 and len(errors) == 1 and "refusing to replace it" in errors[0] and str(app) in errors[0]
    assert _tree(app) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app"]  # no partial folder left


def test_a_bundle_holding_a_users_file_is_not_replaced(glm4_bundle, ckpt, tmp_path, capsys):
    out = tmp_path / "bundle"
    shutil.copytree(glm4_bundle, out)
    (out / "notes.txt").write_text("mine")
    (out / "assets").mkdir()
    before = _tree(out)
    code, errors = _compile([ckpt, "-o", out, "--max-context", "32"], capsys)
    assert code == 2 and len(errors) == 1 and "not part of the bundle" in errors[0]
    assert _tree(out) == before and (out / "assets").is_dir()


def test_a_bundle_of_ours_is_replaced_whole(glm4_bundle, ckpt, tmp_path, capsys):
    out = tmp_path / "bundle"
    shutil.copytree(glm4_bundle, out)
    code, errors = _compile([ckpt, "-o", out, "--max-context", "32"], capsys)
    assert code == 0 and not errors
    assert read_manifest(out).max_context == 32
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_a_compiler_that_exits_0_without_its_module_fails_the_build(glm4_bundle, ckpt, tmp_path, capsys, monkeypatch):
    import iree.compiler as ic

    real = ic.compile_file

    def interrupted(path, output_file=None, **kw):  # iree-compile killed by SIGINT deletes its output
        if output_file and output_file.endswith(".vmfb"):
            return None
        return real(path, output_file=output_file, **kw)

    monkeypatch.setattr(ic, "compile_file", interrupted)
    out = tmp_path / "bundle"
    shutil.copytree(glm4_bundle, out)
    before = _tree(out)
    code, errors = _compile([ckpt, "-o", out, "--max-context", "32"], capsys)
    assert code == 2 and len(errors) == 1 and "wrote no module" in errors[0]
    assert _tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_bundle_files_follow_the_umask(ckpt, tmp_path, capsys):
    old = os.umask(0o022)
    try:
        code, _ = _compile([ckpt, "-o", tmp_path / "b", "--max-context", "32"], capsys)
    finally:
        os.umask(old)
    assert code == 0
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "b").iterdir()}
    assert set(modes.values()) == {0o644}, modes
    assert (tmp_path / "b").stat().st_mode & 0o777 == 0o755


@pytest.fixture()
def read_only_copy(glm4_bundle, tmp_path):
    """The bundle on a read-only bind mount (needs root and mount; skipped elsewhere)."""
    source, mount = tmp_path / "source", tmp_path / "ro"
    shutil.copytree(glm4_bundle, source / "bundle")
    mount.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("a read-only bind mount needs root")
    done = subprocess.run(["mount", "--bind", str(source), str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"mount --bind refused here: {done.stderr.decode().strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(mount)], check=True, capture_output=True)
        yield mount / "bundle"
    finally:  # lazily where a mapping of the bundle's files is still open: never left mounted
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], check=True, capture_output=True)


def test_a_read_only_bundle_generates_the_same_tokens(glm4_bundle, read_only_copy):
    from iree_glm.runtime import Session

    with pytest.raises(OSError):
        (read_only_copy / "probe").write_text("x")
    expected = Session.load(glm4_bundle).generate(PROMPT, max_new_tokens=8).generated_ids
    session = Session.load(read_only_copy)
    try:
        assert session.generate(PROMPT, max_new_tokens=8).generated_ids == expected
    finally:
        session.close()


def test_a_read_only_existing_bundle_is_refused_before_the_compile(ckpt, read_only_copy, capsys):
    """Compiling over a bundle on read-only storage: one line before any work, nothing left beside it."""
    import time

    before = _tree(read_only_copy.parent)
    start = time.perf_counter()
    code, errors = _compile([ckpt, "-o", read_only_copy, "--max-context", "32"], capsys)
    assert code == 2 and len(errors) == 1 and "not writable" in errors[0], errors
    assert time.perf_counter() - start < 20  # refused up front, not after exporting and compiling
    assert _tree(read_only_copy.parent) == before
