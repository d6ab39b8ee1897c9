"""The aarch64 kernel sets, cross-compiled with Debian's aarch64-linux-gnu-gcc into one shared
object per set and run under qemu-aarch64 by an arm64 Python (aarch64_kernels_check.py, one
process per set): every entry point against its numpy integer reference on odd shapes,
extremes, zeros and all-equal rows; the exact verify's few-row kernels row by row against the
one-row kernels, bit for bit. The dotprod set runs on `-cpu cortex-a76` (no i8mm: its
code must not need it), the i8mm set on `-cpu max`."""

import shutil
import subprocess
from pathlib import Path

import pytest

from iree_glm.kernels.toolchain import FOLDER

from ..arm import arm_python, missing

CROSS_CC = "aarch64-linux-gnu-gcc"
CHECK = Path(__file__).with_name("aarch64_kernels_check.py")
# (folder, -march, qemu CPU, suites the check script runs on it)
SETS = {
    "aarch64_dotprod": ("armv8.2-a+dotprod+fp16", "cortex-a76", ("attention", "attention_rows", "int8_matvec", "int8_matvec_rows",
                                                             "int8_quantize", "int8_matmul", "int4_matvec", "int4_matvec_rows",
                                                             "int4_quantize", "int4_matmul")),
    # The i8mm files hold only the matrix kernels (smmla); the rest (attention too) is the dotprod set's code.
    "aarch64_i8mm": ("armv8.2-a+dotprod+fp16+i8mm", "max", ("int8_matmul", "int4_matmul")),
}

pytestmark = [
    pytest.mark.skipif(missing() is not None, reason=str(missing())),
    pytest.mark.skipif(shutil.which(CROSS_CC) is None, reason=f"{CROSS_CC} not installed (apt-get install gcc-aarch64-linux-gnu)"),
]


def build(folder: str, march: str, out: Path) -> Path:
    """One shared object with every kernel file of the set (the files' symbols are disjoint); the
    attention kernel counts the key blocks it reads and computes (IREE_GLM_ATTENTION_PROBE)."""
    sources = sorted((FOLDER / folder).glob("*.c"))
    objects = []
    for src in sources:
        obj = out / f"{folder}_{src.stem}.o"
        subprocess.run([CROSS_CC, "-O3", f"-march={march}", "-std=c17", "-ffreestanding", "-fPIC", "-fno-stack-protector",
                        "-Wall", "-Werror", "-DIREE_GLM_ATTENTION_PROBE", "-c", str(src), "-o", str(obj)], check=True)
        undefined = subprocess.run(["aarch64-linux-gnu-nm", "-u", str(obj)], capture_output=True, text=True, check=True).stdout
        assert undefined.strip() == "", f"{src.name} needs symbols an embedded ELF does not have: {undefined}"
        objects.append(str(obj))
    lib = out / f"{folder}.so"
    subprocess.run([CROSS_CC, "-shared", "-nostdlib", *objects, "-o", str(lib)], check=True)
    return lib


@pytest.fixture(scope="module", params=sorted(SETS))
def results(request, tmp_path_factory) -> tuple[tuple[str, ...], dict[str, list[str]]]:
    """The suites run on one kernel set (one qemu process) and their output lines by case prefix."""
    folder = request.param
    march, cpu, suites = SETS[folder]
    lib = build(folder, march, tmp_path_factory.mktemp(folder))
    proc = arm_python(cpu, str(CHECK), str(lib), *suites)
    print(proc.stdout)
    lines: dict[str, list[str]] = {}
    for line in proc.stdout.splitlines():
        if line.endswith((" ok", " MISMATCH")):
            lines.setdefault(line.split(" ", 1)[0], []).append(line)
    assert proc.returncode == 0 or any(l.endswith("MISMATCH") for v in lines.values() for l in v), proc.stderr[-3000:]
    return suites, lines


# (suite, the case prefixes its lines start with, how many cases each has)
CASES = [
    ("attention", ("attention",), 10),
    ("attention_rows", ("attention_rows",), 6),  # an exact verify's attention: every row a one-row call's bits
    ("int8_matvec", ("int8_matvec",), 9),
    ("int8_matvec_rows", ("int8_matvec_rows",), 8),
    ("int8_quantize", ("int8_quantize", "int8_silu_mul", "int8_rms_norm"), 7),
    ("int8_matmul", ("int8_matmul",), 8),
    ("int4_matvec", ("int4_matvec",), 10),
    ("int4_matvec_rows", ("int4_matvec_rows",), 8),
    ("int4_quantize", ("int4_quantize", "int4_silu_mul", "int4_rms_norm"), 7),
    ("int4_matmul", ("int4_matmul",), 9),
]


@pytest.mark.parametrize("suite, prefixes, cases", CASES, ids=[c[0] for c in CASES])
def test_kernel_against_reference(results, suite, prefixes, cases):
    """Every case of `suite` passed (exact where the reference is exact), and all of them ran."""
    suites, lines = results
    if suite not in suites:
        pytest.skip(f"this set has no {suite} kernel of its own (it takes the dotprod set's)")
    for prefix in prefixes:
        got = lines.get(prefix, [])
        bad = [line for line in got if not line.endswith(" ok")]
        assert not bad, "\n".join(bad)
        assert len(got) == cases, got
