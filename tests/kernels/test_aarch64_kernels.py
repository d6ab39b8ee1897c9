"""The aarch64 kernels, cross-compiled with Debian's aarch64-linux-gnu-gcc and run under
qemu-aarch64 by an arm64 Python (aarch64_int8_check.py): odd shapes, extremes, zeros, and exact
integer sums, against the integer reference."""

import shutil
import subprocess
from pathlib import Path

import pytest

from iree_glm.kernels.toolchain import FOLDER

from ..arm import arm_python, missing

CROSS_CC = "aarch64-linux-gnu-gcc"
CHECK = Path(__file__).with_name("aarch64_int8_check.py")

pytestmark = [
    pytest.mark.skipif(missing() is not None, reason=str(missing())),
    pytest.mark.skipif(shutil.which(CROSS_CC) is None, reason=f"{CROSS_CC} not installed (apt-get install gcc-aarch64-linux-gnu)"),
]


def test_dotprod_int8_matvec_is_exact_under_emulation(tmp_path):
    lib = tmp_path / "int8_dotprod.so"
    subprocess.run([CROSS_CC, "-O3", "-march=armv8.2-a+dotprod", "-std=c17", "-ffreestanding", "-fPIC", "-fno-stack-protector",
                    "-shared", str(FOLDER / "aarch64_dotprod" / "int8.c"), "-o", str(lib)], check=True)
    proc = arm_python("cortex-a76", str(CHECK), str(lib))
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    assert proc.stdout.count(" ok") == 8
