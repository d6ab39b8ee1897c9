"""Running arm64 code under qemu-aarch64 user emulation (the Arm tests; docs/arm.md).

The arm64 Python and the aarch64 iree-base-runtime wheel come from the cache tools/arm_sysroot.sh
fills (`IREE_GLM_ARM_CACHE`, default ~/.cache/iree_glm/aarch64); tests skip where it or qemu is
missing.
"""

import os
import shutil
import subprocess
from pathlib import Path

CACHE = Path(os.environ.get("IREE_GLM_ARM_CACHE", Path.home() / ".cache" / "iree_glm" / "aarch64"))
PYTHON = CACHE / "sysroot" / "usr" / "bin" / "python3.11"
REPO = Path(__file__).resolve().parents[1]


def missing() -> str | None:
    """Why arm64 Python cannot run here (None if it can)."""
    if shutil.which("qemu-aarch64") is None:
        return "qemu-aarch64 not installed (apt-get install qemu-user)"
    if not PYTHON.exists() or not (CACHE / "site" / "iree" / "_runtime_libs").is_dir():
        return f"no arm64 Python + aarch64 iree-base-runtime wheel in {CACHE} (run tools/arm_sysroot.sh)"
    return None


def arm_python(cpu: str, *args: str) -> subprocess.CompletedProcess:
    """Run the arm64 Python with `args` under `qemu-aarch64 -cpu cpu`, this tree on its path."""
    env = ["-E", "LD_LIBRARY_PATH=/lib/aarch64-linux-gnu:/usr/lib/aarch64-linux-gnu:/lib",
           "-E", f"PYTHONPATH={CACHE / 'site'}:{REPO}"]
    return subprocess.run(["qemu-aarch64", "-cpu", cpu, "-L", str(CACHE / "sysroot"), *env, str(PYTHON), *args],
                          capture_output=True, text=True, timeout=600)
