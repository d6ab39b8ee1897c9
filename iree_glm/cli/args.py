"""The command lines' argument parser: a usage mistake is one `error:` line and exit 2, like
any other bad input (argparse alone prints its usage text first)."""

from __future__ import annotations

import argparse

from iree_glm.errors import UserError


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str):  # noqa: D401 (argparse's hook)
        raise UserError(f"{self.prog}: {message} (see --help)")
