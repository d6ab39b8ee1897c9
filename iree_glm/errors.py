"""Errors a user can act on.

Everything raised as a `UserError` is printed by the command-line tools as one line
(`error: <message>`) with exit code 2; anything else is a bug in iree_glm.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input: a file, option or request the user can fix."""


class CheckpointError(UserError):
    """A checkpoint folder that cannot be read or does not describe a supported model."""


class BundleError(UserError):
    """A bundle folder that is missing files, has wrong hashes, or cannot be written."""


class RequestError(UserError):
    """A generation request that cannot be served (prompt too long, bad token ids, ...)."""
