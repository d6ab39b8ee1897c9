"""The small model a new user gets when `compile` is given no checkpoint.

A 5 M-parameter GLM-4 trained on Python's documentation (the manual Debian ships as
`python3-doc`, the stdlib docstrings, and questions about stdlib names answered in GLM-4's chat
layout), with a byte-level BPE tokenizer, all shipped in `default_model_files/` (made by
`tools/train_default_model.py`, reproducible from its seed; training.json records the sources'
versions). It writes documentation-like English: small, but readable, so a first run shows a
model that learned something. The folder also holds held-out text (modules and manual pages the
model never saw) for perplexity, and a sample of the training text (the default calibration
text of `--prune`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from iree_glm.bundle.model_config import ModelConfig
from iree_glm.frontend.hf_config import read_hf_config

FILES = Path(__file__).resolve().parent / "default_model_files"
CHECKPOINT_FILES = ("config.json", "model.safetensors", "tokenizer.json")
HELDOUT_TEXT = FILES / "heldout.txt"
DEFAULT_BUNDLE = Path("bundles") / "default"


def _description() -> str:
    info = json.loads((FILES / "training.json").read_text())
    return (
        f"default model: GLM-4 trained on the Python manual and stdlib docs, {info['parameters'] / 1e6:.1f} M params "
        f"(held-out perplexity {info['heldout_perplexity']:.0f})"
    )


DESCRIPTION = _description()
CONFIG: ModelConfig = read_hf_config(FILES / "config.json")


def write_default_checkpoint(path: Path) -> Path:
    """Copy the shipped default model into a Hugging Face checkpoint folder; returns the folder."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    for name in CHECKPOINT_FILES:
        shutil.copy(FILES / name, path / name)
    return path
