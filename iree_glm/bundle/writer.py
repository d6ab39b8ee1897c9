"""Writing a bundle folder: into a temporary sibling, moved into place only when complete.

A failed compile leaves nothing partial and never destroys the bundle that was there; an
existing folder is replaced only when it provably holds a bundle we wrote.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import json

from iree_glm.bundle.manifest import MANIFEST, Manifest, sha256_file
from iree_glm.errors import BundleError

def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _files_written_by_us(out: Path) -> set[str] | None:
    """The names in `out` that a bundle of ours wrote there (its manifest and the files it
    lists), when `out` holds exactly those; None when `out` is not provably such a bundle (no
    manifest of ours, a listed file missing, or anything beside the listed files)."""
    try:
        d = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    files = d.get("files") if isinstance(d, dict) else None
    if not isinstance(files, dict) or not isinstance(d.get("format_version"), int) or not files:
        return None
    ours = {MANIFEST, *files}
    present = {p.name for p in out.iterdir()}
    if present != ours or not all((out / name).is_file() and not (out / name).is_symlink() for name in ours):
        return None
    return ours


def _check_destination(out: Path) -> set[str]:
    """The files of the bundle at `out` that the new one replaces (empty when `out` is new or an
    empty folder); refuses, in one line, anything that is not provably a bundle we wrote."""
    if out.is_symlink():
        raise BundleError(f"{out}: is a symbolic link; refusing to replace it (give the folder it points to)")
    if out.exists() and not out.is_dir():
        raise BundleError(f"{out}: exists and is a file, not a bundle folder; refusing to overwrite")
    replaced: set[str] = set()
    if out.is_dir():
        try:
            entries = sorted(p.name for p in out.iterdir())
        except OSError as e:
            raise BundleError(f"{out}: cannot read the folder ({e.strerror})") from None
        if entries:
            ours = _files_written_by_us(out)
            if ours is None:
                what = "is not a bundle" if MANIFEST not in entries else "holds files that are not part of the bundle written there"
                raise BundleError(f"{out}: exists, is not empty and {what}; refusing to replace it (choose another -o or empty it)")
            replaced = ours
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BundleError(f"{out}: cannot create the output folder ({e.strerror})") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BundleError(f"{out}: the folder {parent} is not writable")
    if out.is_dir() and not os.access(out, os.W_OK | os.X_OK):
        raise BundleError(f"{out}: the existing bundle folder is not writable")
    return replaced


@contextmanager
def writing_bundle(out: Path) -> Iterator[Path]:
    """Yield a temporary folder to fill; on success it replaces `out`, on failure it vanishes.

    An existing `out` is replaced only when it holds exactly a bundle we wrote (its manifest and
    the files listed there), and only those files are deleted: should anything else appear in it
    meanwhile, it is left where it was, beside the new bundle's previous folder."""
    out = Path(out)
    replaced = _check_destination(out)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    except OSError as e:
        raise BundleError(f"{out}: cannot write beside it in {out.parent} ({e.strerror})") from None
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        replaced = _check_destination(out)  # what is there now, should it have changed while compiling
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.rename(out, old / "bundle")
    os.rename(tmp, out)
    if old is not None:
        for name in replaced:
            (old / "bundle" / name).unlink(missing_ok=True)
        try:
            (old / "bundle").rmdir()
            old.rmdir()
        except OSError:
            print(f"warning: {out}: files that appeared in the old bundle while compiling were kept in {old / 'bundle'}", file=sys.stderr)


def finish_manifest(folder: Path, manifest: Manifest) -> None:
    """Hash every file in the folder into the manifest and write it, after checking that every
    file the runtime needs (modules, parameters, tokenizer) is there and not empty: a compiler
    that was interrupted can exit 0 without its output."""
    needed = [m.file for m in manifest.modules] + [manifest.parameters] + ([manifest.tokenizer] if manifest.tokenizer else [])
    for name in needed:
        path = folder / name
        if not path.is_file() or path.stat().st_size == 0:
            raise BundleError(f"{name}: {'empty' if path.is_file() else 'missing'} after the build "
                              "(was the compiler interrupted?); the bundle was not written")
    # Some writers (IREE's parameter archive) create files 0640 whatever the umask: a bundle is
    # shared between users and apps as the umask allows.
    mode = 0o666 & ~_umask()
    for p in folder.iterdir():
        if p.is_file():
            os.chmod(p, mode)
    manifest.files = {
        p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST
    }
    (folder / MANIFEST).write_text(manifest.to_json())
