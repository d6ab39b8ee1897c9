"""`python -m iree_glm.serve BUNDLE`: the OpenAI-compatible HTTP server.

Bound to 127.0.0.1 unless told otherwise; bound wider without an API key it warns, since
anyone who can reach the port can then use the model. See docs/server.md.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import warnings
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
    p.add_argument("--no-forced-tokens", action="store_true",
                   help="decode the tokens a request's grammar forces (JSON keys, quotes) one step each, instead of "
                        "checking them with the step before them (same output; on by default where the bundle's verify "
                        "rows are decode steps bit for bit)")
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' (default: $IREE_GLM_API_KEY, else none)")
    p.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                   help="let web pages from ORIGIN (e.g. http://localhost:3000, or *) call the server; repeatable. "
                        "Requests from other origins get 403")
    p.add_argument("--header-timeout", type=float, default=10.0, help="seconds a connection has to send a request head (default 10)")
    p.add_argument("--body-timeout", type=float, default=30.0, help="seconds a request body has to arrive (default 30)")
    p.add_argument("--max-connections", type=int, default=256, help="open connections served at once; more get 503 (default 256)")
    p.add_argument("--access-log", action="store_true", help="log one line per request")
    p.add_argument("--plan", metavar="NAME", help="start with the bundle's plan NAME (switch later: POST /admin/plan)")
    p.add_argument("--allow-stand-in", action="store_true", help="let a plan's NPU stages run on the CPU, marked stand-in")
    p.add_argument("--thermal-policy", metavar="C:W,...",
                   help="power budget from the hottest Linux thermal zone, e.g. 60:8,75:4 (from 60 C at most 8 W, from 75 C 4 W); "
                        "switches to the fastest plan within it every --thermal-interval seconds")
    p.add_argument("--thermal-interval", type=option(float, "--thermal-interval", min=0.1), default=5.0, help="seconds between thermal readings (default 5)")
    p.add_argument("--thermal-root", type=Path, default=Path("/sys/class/thermal"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from iree_glm.bundle.manifest import read_manifest
    from iree_glm.runtime import Session
    from iree_glm.runtime.normalize import parse_normalize
    from iree_glm.runtime.prefix_cache import budget_bytes
    from iree_glm.runtime.session import sliding_window
    from iree_glm.runtime.speculative import DEFAULT_DRAFT_TOKENS
    import uvicorn

    from iree_glm.server.app import OpenAIServer
    from iree_glm.server.http import bind, is_loopback, make_app, make_config

    if not 0 <= args.port < 65536:
        raise UserError(f"--port must be in 0..65535 (got {args.port})")
    if args.prefix_cache_mb is not None and args.prefix_cache_mb < 0:
        raise UserError(f"--prefix-cache-mb must be >= 0 (got {args.prefix_cache_mb})")
    if args.draft_tokens is not None and args.draft is None:
        raise UserError("--draft-tokens is only used with --draft")
    draft_tokens = DEFAULT_DRAFT_TOKENS if args.draft_tokens is None else args.draft_tokens
    if not 1 <= draft_tokens <= 64:
        raise UserError(f"--draft-tokens must be from 1 to 64 (got {draft_tokens})")
    for name in ("header_timeout", "body_timeout"):
        if not getattr(args, name) > 0:
            raise UserError(f"--{name.replace('_', '-')} must be > 0 (got {getattr(args, name)})")
    if args.max_connections < 1:
        raise UserError(f"--max-connections must be >= 1 (got {args.max_connections})")
    api_key = args.api_key if args.api_key is not None else os.environ.get("IREE_GLM_API_KEY") or None
    if not is_loopback(args.host) and api_key is None:
        warnings.warn(f"serving on {args.host} without an API key: anyone who can reach this port can use the model "
                      "(set --api-key or IREE_GLM_API_KEY)")
    normalizer = parse_normalize(args.normalize)
    policy = None
    if args.thermal_policy is not None:  # checked before the (slow) load
        from iree_glm.runtime.thermal import ThermalPolicy, parse_steps

        policy = ThermalPolicy(parse_steps(args.thermal_policy), args.thermal_root)
    manifest = read_manifest(args.bundle, verify=False)
    budget = budget_bytes(None if args.prefix_cache_mb is None else int(args.prefix_cache_mb * 2**20), manifest)
    window = sliding_window(manifest)
    if window is not None and args.prefix_cache_mb is None and args.prefix_cache_dir is None:
        budget = 0  # the default prefix cache needs a cache indexed by position; asked for, Session refuses
    session = Session.load(
        args.bundle, verify=not args.no_verify, prefix_cache=budget > 0,
        prefix_cache_dir=args.prefix_cache_dir if budget > 0 else None, prefix_cache_bytes=budget,
        draft=args.draft, draft_tokens=draft_tokens, plan=args.plan, allow_stand_in=args.allow_stand_in,
        forced_tokens=not args.no_forced_tokens,
    )
    session.gather_ms = args.gather_ms
    stop_thermal = None
    if policy is not None:
        policy.apply(session)  # a machine without thermal zones stops here, in one line
        stop_thermal = policy.watch(session, args.thermal_interval)
    server = OpenAIServer(session, args.bundle.name, normalizer, body_timeout=args.body_timeout)
    config = make_config(make_app(server, api_key, tuple(args.allow_origin)), args.host, args.port, args.header_timeout,
                         args.access_log, args.max_connections)
    sizes = ",".join(map(str, session.decode_batch_sizes))
    cache = f"prefix cache {budget / 2**20:.0f} MiB" if budget else "no prefix cache"
    if window is not None:
        cache += f", sliding-window KV cache of {session.cache_slots} slots"
    norm = f", prompts normalized ({normalizer})" if normalizer else ""
    norm += f", draft {session.draft.name} (k <= {session.draft_tokens})" if session.draft is not None else ""
    if session.checks_forced:
        norm += f", grammar-forced tokens checked {session.exact_verify_rows - 1} per call"
    key = ", API key required" if api_key else ""
    key += f", plan {session.plan}" if session.plans is not None and len(session.plans.entries) > 1 else ""
    logging.basicConfig(level=logging.INFO if args.access_log else logging.WARNING, format="%(levelname)s: %(name)s: %(message)s")
    sock = bind(args.host, args.port)
    port = sock.getsockname()[1]
    print(f"serving {args.bundle} on http://{args.host}:{port} (decode batch sizes {sizes}, {cache}{norm}{key})",
          file=sys.stderr, flush=True)
    try:
        asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))
    finally:
        if stop_thermal is not None:
            stop_thermal.set()
        session.close()
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
