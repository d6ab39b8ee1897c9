"""Check a bundle's manifest against the compiled module before any call.

The compiled code indexes the KV cache and the embedding table without bounds checks, and
`manifest.json` is plain text a user (or a script) can edit: a raised `max_context` or
`vocab_size` would let a long prompt or a large token id write or read out of bounds
(`free(): invalid next size`, SIGABRT). So every number the runtime sizes its calls by is
compared with the shapes the module's functions declare (bundle/signature.py) and a mismatch
refuses the bundle in one line.
"""

from __future__ import annotations

from pathlib import Path

from iree_glm.bundle.kv_layout import STORE_KV
from iree_glm.bundle.manifest import MANIFEST, Manifest
from iree_glm.bundle.signature import SIGNATURE_KEY, check_entry_point, check_store_kv


def module_problem(bundle: Path, manifest: Manifest, module, module_file: str, *, cache_layers: int,
                   logits: bool, store_kv: bool, sliding_window: bool, only: tuple[str, ...] | None = None) -> str | None:
    """Why `module` (a VmModule) was not compiled for what `manifest` says, or None. (A message,
    not an exception: the caller frees the mapped module before raising, see devices.py.)
    `only`: the entry points the module has (a prefill stage's), else all the manifest lists."""
    where = f"{Path(bundle) / MANIFEST}"
    cfg, opts = manifest.model, manifest.options
    slots = opts.kv_cache_slots
    try:
        if not sliding_window and manifest.max_context > slots:
            raise ValueError(f"{where}: max_context {manifest.max_context} exceeds the {slots} KV positions per row "
                             "(options.kv_cache_slots) the module was compiled for")
        names = [ep.name for ep in manifest.entry_points]
        for needed in ("prefill", "decode"):  # what the runtime calls
            if needed not in names:
                raise ValueError(f"{where}: entry_points: no '{needed}' entry point")
        if len(set(names)) != len(names):
            raise ValueError(f"{where}: entry_points: a name listed twice")
        common = dict(cache_layers=cache_layers, kv_heads=cfg.num_kv_heads, slots=slots,
                      head_dim=cfg.head_dim, cache_dtype=opts.activation_dtype)
        for ep in manifest.entry_points:
            if only is not None and ep.name not in only:
                continue
            if ep.capacity != slots:
                raise ValueError(f"{where}: entry point '{ep.name}' capacity {ep.capacity} differs from options.kv_cache_slots {slots}")
            hidden = ep.returns == "hidden"
            check_entry_point(where, ep.name, _signature(module, ep.name, module_file, where), batch=ep.batch,
                              seq_len=ep.seq_len, vocab_size=cfg.vocab_size if logits and not hidden else None,
                              hidden_size=cfg.hidden_size if logits and hidden else None, **common)
        if store_kv:
            check_store_kv(where, _signature(module, STORE_KV, module_file, where), **common)
    except ValueError as e:
        return f"{e} ({module_file}; the manifest was edited or belongs to another module: recompile)"
    return None


def _signature(module, name: str, module_file: str, where: str) -> str | None:
    fn = module.lookup_function(name)
    if fn is None:
        raise ValueError(f"{where}: lists function '{name}', which {module_file} does not export")
    return fn.reflection.get(SIGNATURE_KEY)
