"""Compile progress on stderr: a bar on a terminal, one plain line per step in a log.

A tqdm bar redraws itself with carriage returns; written to a file or a pipe those become
`\\r`-separated fragments in one endless line, so a non-terminal stream gets plain lines.
"""

from __future__ import annotations

from typing import TextIO


class StepProgress:
    """Reports named steps of a job of `total` steps; call it with each step's name, then close()."""

    def __init__(self, desc: str, total: int, stream: TextIO):
        self.desc, self.total, self.stream = desc, total, stream
        self.done = 0
        self._bar = None
        isatty = getattr(stream, "isatty", None)
        self.terminal = bool(isatty and isatty())

    def __call__(self, step: str) -> None:
        self.done += 1
        if not self.terminal:
            print(f"{self.desc}: {step}", file=self.stream, flush=True)
            return
        if self._bar is None:  # created at the first step, so input errors print one clean line
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, desc=self.desc, file=self.stream,
                             bar_format="{desc}: {n_fmt}/{total_fmt} {bar:20} {postfix}")
        self._bar.set_postfix_str(step)
        if self._bar.n < self.total:
            self._bar.update(1)
        else:
            self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
