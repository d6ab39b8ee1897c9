"""The bundle folder: what `compile` writes and the runtime loads.

A bundle is a folder with `manifest.json` (format version, model config, entry points,
modules, every file's sha256, compile flags, package versions) beside the files it lists.
It is written into a temporary sibling folder and moved into place only when complete, so a
failed compile leaves nothing partial and never destroys the bundle that was there.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from iree_glm.errors import BundleError

FORMAT_VERSION = 2  # 2: per-layer KV caches updated in place (prefill/decode take slots and key positions)
MANIFEST = "manifest.json"
# Which int8-weight matmuls also quantize their activations and multiply i8 x i8 -> i32
# (passes/dequant_matmul.py): none, multi-token calls (prefill) or all.
INT8_ACTIVATIONS = ("none", "prefill", "all")


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


