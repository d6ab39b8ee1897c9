"""The bundle folder: what `compile` writes and the runtime loads.

A bundle is a folder with `manifest.json` (format version, model config, entry points,
modules, every file's sha256, compile flags, package versions) beside the files it lists.
It is written into a temporary sibling folder and moved into place only when complete, so a
failed compile leaves nothing partial and never destroys the bundle that was there.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

from .errors import BundleError

FORMAT_VERSION = 2  # 2: per-layer KV caches updated in place (prefill/decode take slots and key positions)
MANIFEST = "manifest.json"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def package_versions() -> dict[str, str]:
    out = {}
    for name in ("iree_glm", "iree-base-compiler", "iree-base-runtime", "torch", "tokenizers"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


@dataclass
class ModuleEntry:
    """One compiled module: its file and where it runs."""

    file: str
    partition: str
    backend: str
    driver: str
    flags: list[str]


@dataclass
class Manifest:
    model: dict[str, Any]
    max_context: int
    entry_points: list[dict[str, Any]]
    modules: list[ModuleEntry]
    parameters: str
    parameter_scope: str
    tokenizer: str | None
    source: dict[str, Any]
    profile: str
    options: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=package_versions)
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        d = self.__dict__.copy()
        d["modules"] = [m.__dict__ for m in self.modules]
        return json.dumps(d, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Manifest":
        d = json.loads(text)
        d["modules"] = [ModuleEntry(**m) for m in d["modules"]]
        return cls(**d)


def read_manifest(bundle: Path, verify: bool = True) -> Manifest:
    """Read a bundle's manifest; with `verify`, check that every listed file exists and matches its hash."""
    bundle = Path(bundle)
    path = bundle / MANIFEST
    if not bundle.is_dir():
        raise BundleError(f"{bundle}: not a bundle folder")
    try:
        manifest = Manifest.from_json(path.read_text())
    except FileNotFoundError:
        raise BundleError(f"{path}: missing (is this a bundle made by iree_glm.compile?)") from None
    except (json.JSONDecodeError, TypeError, KeyError) as e:
        raise BundleError(f"{path}: not a valid manifest ({e})") from None
    if manifest.format_version != FORMAT_VERSION:
        raise BundleError(
            f"{path}: bundle format {manifest.format_version}, this runtime reads {FORMAT_VERSION}; recompile it"
        )
    if verify:
        for name, digest in manifest.files.items():
            f = bundle / name
            if not f.is_file():
                raise BundleError(f"{f}: listed in the manifest but missing")
            if sha256_file(f) != digest:
                raise BundleError(f"{f}: sha256 does not match the manifest (file changed or corrupt)")
    return manifest


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
