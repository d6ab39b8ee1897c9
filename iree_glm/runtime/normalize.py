"""Prompt-text normalization, so prompts that differ only in form share prefix-cache entries.

The prefix cache reuses KV by token ids, so two prompts share work only if they tokenize
alike. Clients resend the same system prompt with different whitespace, Unicode forms (a
no-break space, full-width letters, the "ﬁ" ligature) or capitals; with normalization on,
the prompt *text* is rewritten before tokenization, so equal normalized text gives equal
token ids and reuses the cache. Reuse itself stays exact (the KV of those very ids): the
cost is that the model reads the normalized text instead of what was sent.

Steps (applied in this order, each one idempotent, so normalizing twice changes nothing):
  - `nfkc`: Unicode NFKC (compatibility characters -> their plain form: NBSP -> space,
    full-width -> ASCII, ligatures -> letters, composed accents);
  - `case`: lower case (`str.lower`, then NFKC again when `nfkc` is on);
  - `whitespace`: every run of whitespace becomes one space, or one line break if the run
    holds one line break, or a blank line (two breaks) if it holds more; `\\r\\n` counts as
    one break. Indentation is flattened too, so it is not for code or layout-sensitive text.
Token-id prompts are never changed; text is never stripped at its ends.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from iree_glm.errors import UserError

STEPS = ("nfkc", "case", "whitespace")
DEFAULT_STEPS = ("whitespace", "nfkc")  # what `--normalize` alone (or "default") turns on
_WHITESPACE_RUN = re.compile(r"\s+")
_LINE_BREAK = re.compile(r"\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")


@dataclass(frozen=True)
class Normalizer:
    """A set of normalization steps; calling it rewrites a prompt text."""

    steps: tuple[str, ...] = DEFAULT_STEPS

    def __call__(self, text: str) -> str:
        if "nfkc" in self.steps:
            text = unicodedata.normalize("NFKC", text)
        if "case" in self.steps:
            text = text.lower()
            if "nfkc" in self.steps:
                text = unicodedata.normalize("NFKC", text)
        if "whitespace" in self.steps:
            text = _WHITESPACE_RUN.sub(_collapse, text)
        return text

    def __str__(self) -> str:
        return ",".join(s for s in STEPS if s in self.steps)


def _collapse(run: re.Match) -> str:
    breaks = len(_LINE_BREAK.findall(run.group()))
    return " " if breaks == 0 else "\n" if breaks == 1 else "\n\n"


def parse_normalize(spec: str | bool | None, option: str = "--normalize") -> Normalizer | None:
    """'whitespace,nfkc[,case]' | 'default' | 'none' (or True/False/None) -> a Normalizer or None."""
    if spec is None or spec is False:
        return None
    if spec is True:
        return Normalizer()
    if not isinstance(spec, str):
        raise UserError(f"{option}: expected a string like 'whitespace,nfkc' (got {spec!r})")
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if names == ["none"]:
        return None
    if names == ["default"]:
        return Normalizer()
    if not names:
        raise UserError(f"{option}: empty (choose from {', '.join(STEPS)}, 'default' or 'none')")
    for n in names:
        if n not in STEPS:
            raise UserError(f"{option}: unknown step '{n}' (choose from {', '.join(STEPS)}, 'default' or 'none')")
    return Normalizer(tuple(s for s in STEPS if s in names))
