"""llama.cpp side by side: convert a GLM-4 checkpoint to GGUF and time prefill and decode.

An optional benchmark peer, never a test or package dependency (named llamacpp.py so that it
does not shadow the `llama_cpp` package it imports). It needs

- `llama-cpp-python` installed (`pip install llama-cpp-python`; it builds llama.cpp from source),
- llama.cpp's own converter, shipped in the llama-cpp-python source distribution:
  `pip download --no-binary :all: --no-deps llama-cpp-python` gives a `.tar.gz` whose
  `vendor/llama.cpp` folder holds `convert_hf_to_gguf.py` and `gguf-py`. Pass the `.tar.gz`
  or that folder as `--llama-src` (or set LLAMA_CPP_SRC); nothing of it is copied into iree_glm.

GGUF types: F32 and Q8_0 come straight from the converter; Q4_0 is made from the F32 file by
llama.cpp's own quantizer (`llama_model_quantize`, which keeps its default mix: the output
head stays at a higher precision). A checkpoint without a tokenizer (our seeded random
benchmark models) gets a `no_vocab` GGUF: llama.cpp then runs on token ids only.

Each measurement runs in its own Python process (like tools/bench.py) with the given thread
count; prefill is one `llama_decode` of the whole prompt, decode is one call per token with a
greedy argmax in between, medians of several runs.

Library use (the API tools/bench_quant.py and prefill tables rely on):

    from llamacpp import available, convert, measure      # tools/ on sys.path
    gguf = convert(checkpoint, "q8_0", work_folder, llama_src)
    measure(gguf, prompt_len=128, decode_tokens=64, runs=5, threads=2)
    # -> {"prefill_ms": ..., "decode_tok_s": ..., "gguf_mib": ...}

CLI:

    python tools/llamacpp.py CHECKPOINT --llama-src llama_cpp_python-X.tar.gz --types f32,q8_0,q4_0
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Sequence

TYPES = ("f32", "q8_0", "q4_0")
_CONVERTER_TYPES = {"f32": "f32", "q8_0": "q8_0"}  # the converter writes these directly
_LLAMA_FTYPE_MOSTLY_Q4_0 = 2  # llama.h: enum llama_ftype


def _user_error(message: str) -> Exception:
    try:
        from iree_glm.errors import UserError
    except ImportError:  # the tool also runs without iree_glm importable
        return SystemExit(f"error: {message}")
    return UserError(message)


def available() -> bool:
    """Whether llama-cpp-python can be imported here (it is optional)."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return True


def find_source(llama_src: str | Path | None, work: Path) -> Path:
    """The llama.cpp source folder (with convert_hf_to_gguf.py) from a folder or an sdist .tar.gz."""
    llama_src = llama_src or os.environ.get("LLAMA_CPP_SRC")
    if not llama_src:
        raise _user_error("--llama-src: give llama-cpp-python's source (.tar.gz from "
                          "`pip download --no-binary :all: --no-deps llama-cpp-python`) or its vendor/llama.cpp folder")
    path = Path(llama_src)
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz")):
        out = work / path.name.split(".tar")[0].split(".tgz")[0]
        if not out.exists():
            tmp = out.with_name(out.name + ".partial")
            with tarfile.open(path) as tar:
                members = [m for m in tar.getmembers() if "/vendor/llama.cpp/" in m.name and (m.isfile() or m.isdir())]
                tar.extractall(tmp, members=members, filter="data")
            tmp.rename(out)
        path = next(out.glob("*/vendor/llama.cpp"), out)
    elif (path / "vendor" / "llama.cpp").is_dir():
        path = path / "vendor" / "llama.cpp"
    if not (path / "convert_hf_to_gguf.py").is_file() or not (path / "gguf-py").is_dir():
        raise _user_error(f"--llama-src {llama_src}: no convert_hf_to_gguf.py and gguf-py found there")
    return path


def convert(checkpoint: Path, kind: str, work: Path, llama_src: str | Path | None = None) -> Path:
    """GGUF file of `checkpoint` as `kind` (f32, q8_0, q4_0) in `work`; reused when already there."""
    if kind not in TYPES:
        raise _user_error(f"--types: unknown GGUF type '{kind}' (choose from {', '.join(TYPES)})")
    checkpoint, work = Path(checkpoint), Path(work)
    work.mkdir(parents=True, exist_ok=True)
    out = work / f"{checkpoint.name}-{kind}.gguf"
    if out.exists():
        return out
    tmp = out.with_name(out.name + ".partial")
    if kind in _CONVERTER_TYPES:
        src = find_source(llama_src, work)
        cmd = [sys.executable, __file__, "--convert-child", str(src), str(checkpoint), str(tmp), _CONVERTER_TYPES[kind]]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"llama.cpp converter failed for {checkpoint}:\n{proc.stderr[-3000:]}")
    else:  # q4_0: llama.cpp's quantizer on the f32 file
        f32 = convert(checkpoint, "f32", work, llama_src)
        cmd = [sys.executable, __file__, "--quantize-child", str(f32), str(tmp)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"llama.cpp quantize failed for {f32}:\n{proc.stderr[-3000:]}")
    tmp.rename(out)
    return out


def _convert_child(src: Path, checkpoint: Path, out: Path, outtype: str) -> None:
    """Run llama.cpp's converter in this process (a child), with a `no_vocab` vocabulary if there is no tokenizer."""
    sys.path[:0] = [str(src), str(src / "gguf-py")]
    sys.argv = ["convert_hf_to_gguf.py", str(checkpoint), "--outfile", str(out), "--outtype", outtype]
    import convert_hf_to_gguf as converter  # noqa: E402  (llama.cpp's own)

    if not any((checkpoint / f).exists() for f in ("tokenizer.json", "tokenizer.model")):
        import types

        from conversion.base import TextModel

        def no_vocab(self):
            self.gguf_writer.add_tokenizer_model("no_vocab")
            self.gguf_writer.add_vocab_size(self.hparams["vocab_size"])

        prepare = TextModel.prepare_metadata

        def prepare_without_tokenizer(self, *a, **k):  # model classes register lazily: patch the instance
            self.set_vocab = types.MethodType(no_vocab, self)
            return prepare(self, *a, **k)

        TextModel.prepare_metadata = prepare_without_tokenizer
    converter.main()


def _quantize_child(src: Path, out: Path) -> None:
    import ctypes

    import llama_cpp

    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = _LLAMA_FTYPE_MOSTLY_Q4_0
    params.nthread = 2
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(out).encode(), ctypes.byref(params))
    if rc != 0:
        raise SystemExit(f"llama_model_quantize returned {rc}")


def _allow_amx() -> bool:
    """Ask Linux for AMX tile state (x86-64). The kernel gives it to a process only on request;
    llama.cpp's AMX code (chosen for Q8_0 / Q4_0 on CPUs with amx_int8, e.g. Sapphire Rapids)
    does not ask and died with SIGSEGV at its first tile load. Returns whether it was granted."""
    import ctypes
    import platform

    if platform.machine() != "x86_64":
        return False
    sys_arch_prctl, arch_req_xcomp_perm, xfeature_xtiledata = 158, 0x1023, 18
    return ctypes.CDLL(None).syscall(sys_arch_prctl, arch_req_xcomp_perm, xfeature_xtiledata) == 0


def _measure_here(gguf: Path, prompt_len: int, decode_tokens: int, runs: int, threads: int) -> dict:
    """Time prefill and greedy decode with llama.cpp in this process."""
    import numpy as np

    import llama_cpp as L

    _allow_amx()
    L.llama_backend_init()
    mparams = L.llama_model_default_params()
    if os.environ.get(NO_EXTRA_BUFTS):
        mparams.use_extra_bufts = False
    model = L.llama_model_load_from_file(str(gguf).encode(), mparams)
    if not model:
        raise SystemExit(f"llama.cpp could not load {gguf}")
    cparams = L.llama_context_default_params()
    cparams.n_ctx = prompt_len + decode_tokens + 8
    cparams.n_batch = cparams.n_ubatch = prompt_len
    cparams.n_threads = cparams.n_threads_batch = threads
    ctx = L.llama_init_from_model(model, cparams)
    n_vocab = _n_vocab(L, model)
    prompt = [(i * 7919) % n_vocab for i in range(1, prompt_len + 1)]

    def clear():
        L.llama_memory_clear(L.llama_get_memory(ctx), True)

    def decode(tokens: list[int]) -> int:
        arr = (L.llama_token * len(tokens))(*tokens)
        rc = L.llama_decode(ctx, L.llama_batch_get_one(arr, len(tokens)))
        if rc != 0:
            raise SystemExit(f"llama_decode returned {rc}")
        logits = np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, -1), shape=(n_vocab,))
        return int(logits.argmax())

    def once(steps: int) -> tuple[float, float]:
        clear()
        t = time.perf_counter()
        token = decode(prompt)
        t_prefill = time.perf_counter() - t
        t = time.perf_counter()
        for _ in range(steps):
            token = decode([token])
        return t_prefill * 1e3, steps / (time.perf_counter() - t)

    once(4)  # warm-up
    prefill, dec = [], []
    for _ in range(runs):
        p, d = once(decode_tokens)
        prefill.append(p)
        dec.append(d)
    L.llama_free(ctx)
    L.llama_model_free(model)
    return {"prefill_ms": statistics.median(prefill), "decode_tok_s": statistics.median(dec),
            "gguf_mib": gguf.stat().st_size / 2**20}


def _n_vocab(L, model) -> int:
    """Logits per token: the vocabulary size (a no_vocab GGUF carries it as dummy tokens)."""
    return int(L.llama_vocab_n_tokens(L.llama_model_get_vocab(model)))


# Set in a measuring child: llama.cpp's extra buffer types (AMX / repacked weights) are off.
NO_EXTRA_BUFTS = "IREE_GLM_LLAMA_NO_EXTRA_BUFTS"


def measure(gguf: Path, prompt_len: int = 128, decode_tokens: int = 64, runs: int = 5, threads: int = 2,
            wait_policy: str = "passive") -> dict:
    """Prefill ms and decode tok/s of a GGUF file, measured in a fresh process with `threads` threads.

    `wait_policy` is OMP_WAIT_POLICY for llama.cpp's OpenMP threads. On a shared, oversubscribed
    machine its default busy-waiting made decode ~25x slower (0.8 vs 21.6 tok/s, Q8_0 330M, load
    ~17), so passive is the default here; on a dedicated machine "active" may be a little faster.
    """
    cmd = [sys.executable, __file__, "--measure-child", str(gguf), "--prompt-len", str(prompt_len),
           "--decode-tokens", str(decode_tokens), "--runs", str(runs), "--threads", str(threads)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OMP_WAIT_POLICY=wait_policy)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    note = None
    if proc.returncode == -11 and "amx" in proc.stderr.lower():
        # llama.cpp's AMX kernels died with SIGSEGV on an AMX-capable KVM guest (Sapphire Rapids)
        # even with the tile state granted; its AVX-512 path runs. Said on stderr and in the result.
        note = "llama.cpp's AMX path crashed (SIGSEGV): measured with its extra buffer types (AMX, repack) off"
        print(f"{gguf.name}: {note}", file=sys.stderr)
        proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(env, **{NO_EXTRA_BUFTS: "1"}))
    if proc.returncode != 0:
        raise RuntimeError(f"llama.cpp benchmark of {gguf} failed:\n{proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {**result, "note": note} if note else result


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path, nargs="?", help="a GLM-4 checkpoint folder (config.json + safetensors)")
    p.add_argument("--llama-src", help="llama-cpp-python sdist .tar.gz or its vendor/llama.cpp folder (default: $LLAMA_CPP_SRC)")
    p.add_argument("--types", default="q8_0,q4_0", help=f"comma-separated GGUF types ({', '.join(TYPES)})")
    p.add_argument("--work", type=Path, default=Path("bench-work"), help="where GGUF files are kept")
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--decode-tokens", type=int, default=64)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--wait-policy", default="passive", choices=("passive", "active"), help="OMP_WAIT_POLICY for llama.cpp (default passive)")
    p.add_argument("--convert-child", nargs=4, help=argparse.SUPPRESS)
    p.add_argument("--quantize-child", nargs=2, help=argparse.SUPPRESS)
    p.add_argument("--measure-child", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.convert_child:
        src, ckpt, out, outtype = args.convert_child
        _convert_child(Path(src), Path(ckpt), Path(out), outtype)
        return 0
    if args.quantize_child:
        _quantize_child(Path(args.quantize_child[0]), Path(args.quantize_child[1]))
        return 0
    if args.measure_child:
        print(json.dumps(_measure_here(args.measure_child, args.prompt_len, args.decode_tokens, args.runs, args.threads)))
        return 0

    if args.checkpoint is None or not (args.checkpoint / "config.json").is_file():
        raise _user_error(f"checkpoint: {args.checkpoint} is not a checkpoint folder (no config.json)")
    if not available():
        raise _user_error("llama-cpp-python is not installed (pip install llama-cpp-python)")
    rows = []
    for kind in args.types.split(","):
        gguf = convert(args.checkpoint, kind.strip().lower(), args.work, args.llama_src)
        rows.append((kind, measure(gguf, args.prompt_len, args.decode_tokens, args.runs, args.threads, args.wait_policy)))
    print(f"\n{args.checkpoint.name}: llama.cpp, prefill {args.prompt_len} tokens, decode {args.decode_tokens}; "
          f"{args.threads} threads (OMP_WAIT_POLICY={args.wait_policy}); median of {args.runs} runs\n")
    print("| GGUF | MiB | prefill ms | decode tok/s |")
    print("|---|---|---|---|")
    for kind, r in rows:
        print(f"| {kind.upper()} | {r['gguf_mib']:.0f} | {r['prefill_ms']:.1f} | {r['decode_tok_s']:.1f} |")
    return 0


if __name__ == "__main__":
    try:
        from iree_glm.errors import run_cli
    except ImportError:
        sys.exit(main())
    sys.exit(run_cli(main))
