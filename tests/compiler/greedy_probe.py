"""Prefill a prompt and decode greedily with the runtime's Session; writes tokens and logits
(npz). Where the bundle's verify is exact (Session.exact_verify_rows), also the logits of one
verify call checking the first greedy tokens after the prompt, as speculative decoding would
(`verify_logits`: bit for bit the decode steps' logits if verification is exact), and the
tokens and target calls of speculative decoding with a draft that proposes the greedy tokens
(`spec_tokens`, `spec_calls`). Run by test_arm_emulation.py on the host and under
qemu-aarch64 with an arm64 Python, so it uses only the runtime install (no torch, no
compiler).

Usage: python greedy_probe.py BUNDLE OUT.npz PROMPT_IDS(comma-separated) NEW_TOKENS
"""

import sys

import numpy as np

from iree_glm.runtime import speculative
from iree_glm.runtime.drafts import Proposal
from iree_glm.runtime.session import Session


def main(bundle: str, out: str, ids: str, new_tokens: str) -> None:
    session = Session.load(bundle, verify=False)  # hashing under emulation is slow; the tests wrote the files
    prompt = [int(i) for i in ids.split(",")]
    cache = session.new_cache()
    logits = [session.run_prefill(prompt, 0, cache)]
    tokens = [int(np.argmax(logits[-1]))]
    for pos in range(len(prompt), len(prompt) + int(new_tokens) - 1):
        logits.append(session.decode([tokens[-1]], [pos], cache)[0])
        tokens.append(int(np.argmax(logits[-1])))
    rows = min(session.exact_verify_rows, len(tokens) - 1)
    verify_logits = np.zeros((0, logits[0].shape[-1]), np.float32)
    spec_tokens, spec_calls = [], 0
    if rows:
        cache = session.new_cache()
        session.run_prefill(prompt, 0, cache)
        verify_logits = session.verify(tokens[:rows], len(prompt), cache)
        # The whole speculative loop with a draft that proposes these greedy tokens (every round
        # checked in one verify call; emulated timings must not pause it).
        speculative.AdaptiveK.timed = lambda self, proposed, seconds: None
        spec = Session.load(bundle, verify=False, draft=Oracle(prompt, tokens), draft_tokens=rows - 1)
        result = spec.generate(prompt, len(tokens), stop_ids=())
        spec_tokens, spec_calls = result.generated_ids, result.target_calls
    np.savez(out, tokens=np.asarray(tokens), logits=np.stack(logits), verify_logits=verify_logits,
             exact_rows=np.asarray(session.exact_verify_rows), spec_tokens=np.asarray(spec_tokens, np.int64),
             spec_calls=np.asarray(spec_calls))


class Oracle:
    """A draft that proposes the plain greedy continuation (runtime.drafts.Draft)."""

    name = "oracle"

    def __init__(self, prompt: list[int], tokens: list[int]):
        self.prompt, self.tokens = prompt, tokens

    def start(self, sampling):
        return self

    def propose(self, context, k):
        done = len(context) - len(self.prompt)
        return Proposal(self.tokens[done:done + k])

    def accepted(self, context_length, kept):
        pass


if __name__ == "__main__":
    main(*sys.argv[1:])
