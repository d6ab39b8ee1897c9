import os
import warnings
from pathlib import Path

import pytest

from iree_glm.compiler.build import BuildOptions, build_bundle
from iree_glm.export import cache as export_cache
from iree_glm.kernels import int4 as int4_kernel

from .helpers import write_hf_checkpoint

warnings.filterwarnings("ignore", message=".*LeafSpec.*")


@pytest.fixture(scope="session", autouse=True)
def shared_export_cache(tmp_path_factory):
    """One export cache for the whole run, every xdist worker and CLI subprocess included: the
    tests build many bundles of a few tiny shapes, and exporting is most of a build's time.
    tests/export checks that a cached export is the one a fresh export would give."""
    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "export-cache"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(export_cache.ENV, str(folder))
        yield folder


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


@pytest.fixture(scope="session")
def batched_bundle(glm4_checkpoint, tmp_path_factory) -> Path:
    """The tiny GLM-4 with decode entry points for batches of 1, 2 and 4 (serving tests)."""
    out = tmp_path_factory.mktemp("bundles") / "glm4-batched"
    build_bundle(glm4_checkpoint[0], out, BuildOptions(max_context=128, decode_batch_sizes=(1, 2, 4)))
    return out


@pytest.fixture(scope="session")
def served_bundle(tmp_path_factory) -> Path:
    """The tiny GLM-4 (same weights) with a 1024-token context, room for tool listings in its
    one-byte-per-token tokenizer, and batches of 1, 2, 4 (the OpenAI client tests)."""
    ckpt = tmp_path_factory.mktemp("ckpt") / "glm4-long"
    write_hf_checkpoint("glm4_gqa", ckpt, max_positions=1024)
    out = tmp_path_factory.mktemp("bundles") / "glm4-served"
    build_bundle(ckpt, out, BuildOptions(max_context=1024, decode_batch_sizes=(1, 2, 4)))
    return out


@pytest.fixture(scope="module")
def int4_kernel_object(tmp_path_factory):
    """The int4 AVX2 kernels' object file (test_dequant_matmul.py, test_quantize_glue.py); skips where they cannot build."""
    reason = int4_kernel.unavailable_reason()
    if reason:
        pytest.skip(f"int4 AVX2 kernel unavailable: {reason}")
    return int4_kernel.build_object(tmp_path_factory.mktemp("int4_kernel"))
