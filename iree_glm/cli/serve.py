"""`python -m iree_glm.serve BUNDLE`: the OpenAI-compatible HTTP server.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Sequence

from iree_glm.cli.args import ArgumentParser
from iree_glm.errors import run_cli
from iree_glm.validation import option
from iree_glm.errors import UserError


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = ArgumentParser(prog="python -m iree_glm.serve", description=__doc__.split("\n\n")[0])
    p.add_argument("bundle", type=Path, help="bundle folder written by iree_glm.compile")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=option(int, "--port", min=0, max=65535), default=8080, help="0 picks a free port (printed at start)")
    p.add_argument("--prefix-cache-dir", type=Path, help="persist the prefix KV cache in this folder")
    p.add_argument("--prefix-cache-mb", type=option(float, "--prefix-cache-mb", min=0.0), default=None, help="prefix cache budget in MiB (default: the bundle's profile prefix_cache_mb, else 512; 0 disables it)")
    p.add_argument("--normalize", nargs="?", const="default", metavar="STEPS",
                   help="normalize prompt text before tokenization (steps from whitespace,nfkc,case; alone: whitespace,nfkc) "
                        "so prompts differing only in form share cached prefixes; requests may override it")
    p.add_argument("--gather-ms", type=option(float, "--gather-ms", min=0.0), default=10.0, help="batching window when the engine was idle (default 10)")
    p.add_argument("--no-verify", action="store_true", help="skip checking file hashes at load")
    p.add_argument("--draft", metavar="prompt-lookup|BUNDLE",
                   help="speculative decoding for a request that runs alone: draft tokens from prompt lookup or a smaller "
                        "bundle with the same tokenizer, checked in one call (same output)")
    p.add_argument("--draft-tokens", type=int, metavar="K", help="at most K draft tokens per call (default 8)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from iree_glm.bundle.manifest import read_manifest
    from iree_glm.runtime import Session
    from iree_glm.runtime.normalize import parse_normalize
    from iree_glm.runtime.prefix_cache import budget_bytes
    from iree_glm.runtime.session import sliding_window
    from iree_glm.runtime.speculative import DEFAULT_DRAFT_TOKENS
    from iree_glm.server.openai_api import Server, serve

    if not 0 <= args.port < 65536:
        raise UserError(f"--port must be in 0..65535 (got {args.port})")
    if args.prefix_cache_mb is not None and args.prefix_cache_mb < 0:
        raise UserError(f"--prefix-cache-mb must be >= 0 (got {args.prefix_cache_mb})")
    if args.draft_tokens is not None and args.draft is None:
        raise UserError("--draft-tokens is only used with --draft")
    draft_tokens = DEFAULT_DRAFT_TOKENS if args.draft_tokens is None else args.draft_tokens
    if not 1 <= draft_tokens <= 64:
        raise UserError(f"--draft-tokens must be from 1 to 64 (got {draft_tokens})")
    normalizer = parse_normalize(args.normalize)
    manifest = read_manifest(args.bundle, verify=False)
    budget = budget_bytes(None if args.prefix_cache_mb is None else int(args.prefix_cache_mb * 2**20), manifest)
    window = sliding_window(manifest)
    if window is not None and args.prefix_cache_mb is None and args.prefix_cache_dir is None:
        budget = 0  # the default prefix cache needs a cache indexed by position; asked for, Session refuses
    session = Session.load(
        args.bundle, verify=not args.no_verify, prefix_cache=budget > 0,
        prefix_cache_dir=args.prefix_cache_dir if budget > 0 else None, prefix_cache_bytes=budget,
        draft=args.draft, draft_tokens=draft_tokens,
    )
    session.gather_ms = args.gather_ms
    server = Server(session, args.bundle.name, normalizer)

    def ready(port: int) -> None:
        sizes = ",".join(map(str, session.decode_batch_sizes))
        cache = f"prefix cache {budget / 2**20:.0f} MiB" if budget else "no prefix cache"
        if window is not None:
            cache += f", sliding-window KV cache of {session.cache_slots} slots"
        norm = f", prompts normalized ({normalizer})" if normalizer else ""
        norm += f", draft {session.draft.name} (k <= {session.draft_tokens})" if session.draft is not None else ""
        print(f"serving {args.bundle} on http://{args.host}:{port} (decode batch sizes {sizes}, {cache}{norm})", file=sys.stderr, flush=True)

    try:
        asyncio.run(serve(server, args.host, args.port, ready))
    except OSError as e:
        raise UserError(f"cannot listen on {args.host}:{args.port} ({e.strerror})") from None
    finally:
        session.close()
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
