"""Exported MLIR kept by what it depends on, so a rebuild of the same model shape skips torch.export.

The MLIR a build exports holds no weights: every tensor of the model's state is a named
parameter (export/program.py), read from the bundle's archive at run time. So the MLIR is a
function of the model's structure, not of its values: the classes of its modules and their
attributes (configuration, the kernel and form choices a build marks on them), the names,
shapes and dtypes of its tensors, the entry points, and the code that traces it. The key hashes
all of these, with torch's and IREE's versions and the source of this package. A value the key
cannot describe exactly (an object of an unknown type, a hook) makes the model uncacheable:
it is exported as if there were no cache, never looked up under a key that misses it.

Exporting is most of a build's time (a 24-layer 330M model: ~460 s of a 9-minute build on a
2-core Zen 3); a cached export is a file copy. Entries are written whole (a temporary file
moved in), so builds running at once can share a folder. Nothing evicts them: delete the
folder to reclaim its space.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable

import torch

from iree_glm.bundle.manifest import EntryPoint
from iree_glm.errors import UserError

ENV = "IREE_GLM_EXPORT_CACHE"  # the folder, when a build is not given one
_PACKAGE = Path(__file__).resolve().parents[1]  # iree_glm/


class Uncacheable(Exception):
    """The model holds something the key cannot describe exactly."""


@functools.lru_cache(maxsize=1)
def _code_digest() -> str:
    """The package's Python source, torch's and IREE's versions: what traces and imports the model."""
    h = hashlib.sha256()
    for path in sorted(_PACKAGE.rglob("*.py")):
        h.update(str(path.relative_to(_PACKAGE)).encode() + b"\0" + path.read_bytes() + b"\0")
    from iree.compiler import version as iree_version  # whichever distribution installed it

    h.update(f"torch={torch.__version__}\0iree={iree_version.VERSION} {iree_version.REVISIONS}\0".encode())
    return h.hexdigest()


def _describe(value: Any) -> str:
    """An exact text for a module attribute's value, or Uncacheable."""
    if value is None or isinstance(value, (bool, int, float, str, bytes, Path)):
        return f"{type(value).__name__}:{value!r}"
    if isinstance(value, enum.Enum):
        return f"{type(value).__qualname__}.{value.name}"
    if isinstance(value, (torch.dtype, torch.device)):
        return str(value)
    if isinstance(value, torch.Tensor):  # a plain tensor attribute: its values may be traced in
        data = value.detach().cpu().contiguous()
        raw = data.reshape(-1).view(torch.uint8).numpy().tobytes()
        return f"tensor{tuple(data.shape)}{data.dtype}:{hashlib.sha256(raw).hexdigest()}"
    if isinstance(value, (list, tuple, frozenset, set)):
        items = [_describe(v) for v in value]
        return f"{type(value).__name__}[{','.join(sorted(items) if isinstance(value, (set, frozenset)) else items)}]"
    if isinstance(value, dict):
        return "dict{" + ",".join(f"{_describe(k)}={_describe(v)}" for k, v in sorted(value.items(), key=lambda kv: repr(kv[0]))) + "}"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = ",".join(f"{f.name}={_describe(getattr(value, f.name))}" for f in dataclasses.fields(value))
        return f"{type(value).__module__}.{type(value).__qualname__}({fields})"
    raise Uncacheable(f"a {type(value).__module__}.{type(value).__qualname__}")


def _describe_module(name: str, module: torch.nn.Module) -> str:
    cls = type(module)
    lines = [f"module {name} {cls.__module__}.{cls.__qualname__}"]
    for attr, value in sorted(vars(module).items()):
        if attr in ("_parameters", "_buffers"):
            for tname, t in value.items():
                if t is None:
                    lines.append(f"  {attr} {tname} None")
                elif attr == "_buffers" and tname in module._non_persistent_buffers_set:  # constants: values too
                    lines.append(f"  constant {tname} {_describe(t)}")
                else:  # a named parameter in the MLIR: shape and dtype only
                    lines.append(f"  {attr} {tname} {tuple(t.shape)} {t.dtype}")
        elif attr == "_modules":
            lines.append(f"  children {list(value)}")
        elif attr.endswith("hooks") or attr.endswith("hooks_with_kwargs") or attr.endswith("hooks_always_called"):
            if value:
                raise Uncacheable(f"{name or 'the model'} has {attr}")
        elif attr in ("_non_persistent_buffers_set",):
            continue  # described with the buffers
        else:
            lines.append(f"  {attr}={_describe(value)}")
    return "\n".join(lines)


def export_key(model: torch.nn.Module, entry_points: Iterable[EntryPoint], **options: Any) -> str | None:
    """The cache key of exporting `model` for `entry_points` with `options` (cache dtype, rewrites),
    or None where the model is uncacheable."""
    first: dict[int, str] = {}  # tensors that several names share (tied weights) are imported once
    shared = []
    for name, t in model.state_dict(keep_vars=True).items():
        if first.setdefault(id(t), name) != name:
            shared.append(f"{name} is {first[id(t)]}")
    try:
        text = "\n".join([_code_digest(), *(_describe_module(n, m) for n, m in model.named_modules()), *shared,
                          _describe(list(entry_points)), _describe(options)])
    except Uncacheable:
        return None
    return hashlib.sha256(text.encode()).hexdigest()


def cache_folder(folder: Path | str | None) -> Path | None:
    """The folder given, else $IREE_GLM_EXPORT_CACHE, else None (no cache); created if missing."""
    given = folder is not None
    folder = folder if given else os.environ.get(ENV) or None
    if folder is None:
        return None
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        where = "--export-cache" if given else ENV
        raise UserError(f"{folder}: cannot be the export cache ({where}): {e.strerror or e}") from None
    return folder


def fetch(folder: Path, key: str, dest: Path) -> bool:
    """Copy the entry for `key` to `dest`; False where there is none."""
    entry = folder / f"{key}.mlirbc"
    try:
        shutil.copyfile(entry, dest)
    except FileNotFoundError:
        return False
    return True


def store(folder: Path, key: str, source: Path) -> None:
    """Keep `source` as the entry for `key` (whole or not at all)."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{key[:12]}-", suffix=".tmp")
    os.close(fd)
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, folder / f"{key}.mlirbc")
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
