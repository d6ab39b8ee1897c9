import warnings
from pathlib import Path

import pytest

from iree_glm.build import BuildOptions, build_bundle

from .helpers import write_hf_checkpoint

warnings.filterwarnings("ignore", message=".*LeafSpec.*")


@pytest.fixture(scope="session")
def glm4_checkpoint(tmp_path_factory) -> tuple[Path, object]:
    path = tmp_path_factory.mktemp("ckpt") / "glm4"
    model = write_hf_checkpoint("glm4_gqa", path)
    return path, model


@pytest.fixture(scope="session")
def glm4_bundle(glm4_checkpoint, tmp_path_factory) -> Path:
    """The tiny GLM-4 checkpoint compiled once per session (context 128)."""
    out = tmp_path_factory.mktemp("bundles") / "glm4"
    build_bundle(glm4_checkpoint[0], out, BuildOptions(max_context=128))
    return out
