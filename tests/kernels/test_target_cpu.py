"""Kernel sets are chosen from the bundle's target CPU (its flags), never the build machine's."""

from __future__ import annotations

import pytest

from iree_glm.compiler import kernel_choice
from iree_glm.compiler.target import Target, host_cpu_target
from iree_glm.kernels import toolchain
from iree_glm.kernels.target_cpu import from_flags

ARM = "--iree-llvmcpu-target-triple=aarch64-linux-gnu"


def test_named_cpus_and_explicit_features():
    pi = from_flags([ARM, "--iree-llvmcpu-target-cpu=cortex-a76"])
    assert (pi.arch, pi.cpu, pi.known) == ("aarch64", "cortex-a76", True)
    assert pi.has(["dotprod"]) and not pi.has(["i8mm"])
    custom = from_flags([ARM, "--iree-llvmcpu-target-cpu=generic", "--iree-llvmcpu-target-cpu-features=+v9.2a,+neon,+dotprod,+i8mm,-sve"])
    assert custom.has(["dotprod", "i8mm"]) and not custom.has(["sve"]) and custom.known
    znver4 = from_flags(["--iree-llvmcpu-target-cpu=znver4"])
    assert znver4.arch == "x86_64" and znver4.has(["avx512vnni", "avx512bf16"])
    assert "avx512vnni" in znver4.isa_features() and "x86-64" not in znver4.isa_features()
    unknown = from_flags([ARM, "--iree-llvmcpu-target-cpu=mystery-9"])
    assert not unknown.known and not unknown.features


@pytest.mark.parametrize("flags, expected", [
    (["--iree-llvmcpu-target-cpu=haswell"], "x86_64_avx2"),
    (["--iree-llvmcpu-target-cpu=znver4"], "x86_64_avx512"),
    (["--iree-llvmcpu-target-cpu=sapphirerapids"], "x86_64_amx"),  # AMX-INT8 tiles
    (["--iree-llvmcpu-target-cpu=graniterapids"], "x86_64_amx"),
    (["--iree-llvmcpu-target-cpu=sapphirerapids", "--iree-llvmcpu-target-cpu-features=-amx-int8"], "x86_64_avx512"),
    (["--iree-llvmcpu-target-cpu=znver4", "--iree-llvmcpu-target-cpu-features=+amx-int8"], "x86_64_avx512"),  # no amx-tile
    (["--iree-llvmcpu-target-cpu=icelake-server"], "x86_64_avx512"),
    (["--iree-llvmcpu-target-cpu=cascadelake"], "x86_64_avx512"),  # VNNI without BF16: the set needs no BF16
    (["--iree-llvmcpu-target-cpu=skylake-avx512"], "x86_64_avx2"),  # AVX-512 without VNNI
    (["--iree-llvmcpu-target-cpu=znver4", "--iree-llvmcpu-target-cpu-features=-avx512vnni"], "x86_64_avx2"),
    (["--iree-llvmcpu-target-cpu=haswell", "--iree-llvmcpu-target-cpu-features=+avx512f,+avx512bw,+avx512vl,+avx512vnni"], "x86_64_avx512"),
    (["--iree-llvmcpu-target-cpu=x86-64"], "target x86_64 x86-64 lacks avx2, fma, f16c"),
    ([ARM, "--iree-llvmcpu-target-cpu=cortex-a76"], "aarch64_dotprod"),
    ([ARM, "--iree-llvmcpu-target-cpu=generic", "--iree-llvmcpu-target-cpu-features=+v9.2a,+neon,+fullfp16,+dotprod,+i8mm,-sve"], "aarch64_i8mm"),
    ([ARM, "--iree-llvmcpu-target-cpu=cortex-x4"], "aarch64_i8mm"),
    ([ARM, "--iree-llvmcpu-target-cpu=cortex-a57"], "target aarch64 cortex-a57 lacks dotprod, fullfp16"),
    (["--iree-llvmcpu-target-triple=riscv64-linux-gnu", "--iree-llvmcpu-target-cpu=generic"], "target riscv64 generic: no kernel set of ours for riscv64"),
    (["--iree-llvmcpu-target-cpu=mystery-9"], "target x86_64 mystery-9: unknown CPU"),
])
def test_select_reads_the_target_not_the_build_machine(flags, expected):
    kernel_set, reason = toolchain.select(from_flags(flags))
    assert (kernel_set.name if kernel_set else reason).startswith(expected)


def test_a_build_for_an_older_cpu_gets_no_kernels_even_on_this_machine():
    target = Target("llvm-cpu", "local-task", (*host_cpu_target().flags, "--iree-llvmcpu-target-cpu=x86-64"))
    kernel_set, reason = kernel_choice.kernel_set_for(target, ())
    assert kernel_set is None and "lacks avx2" in reason


@pytest.mark.parametrize("profile, cpu, has, lacks", [
    ("raspberry-pi-5", "cortex-a76", ["dotprod"], ["i8mm", "sve"]),
    ("snapdragon-8-gen3", "generic", ["dotprod", "i8mm", "bf16"], ["sve", "sve2"]),
    ("dimensity-9300", "generic", ["dotprod", "i8mm", "bf16"], ["sve", "sve2"]),
])
def test_arm_profiles_get_the_fast_lowering_for_their_cpu(profile, cpu, has, lacks):
    """Data tiling, ukernels and decomposed attention (the host's measured flags), the profile's
    CPU with no SVE (IREE 3.13 crashes on cortex-x4's SVE with decomposed attention), and integer
    prompt matmuls where the CPU has dotprod or i8mm."""
    from iree_glm.compiler.target import ATTENTION_DECOMPOSITION, device_target
    from iree_glm.planner.profile import load_profile

    device = next(d for d in load_profile(profile).devices if d.kind == "cpu")
    flags = device_target(device).flags
    assert ATTENTION_DECOMPOSITION in flags
    assert {"--iree-global-opt-data-tiling=true", "--iree-llvmcpu-enable-ukernels=all"} <= set(flags)
    assert "--iree-llvmcpu-target-cpu=host" not in flags
    target = from_flags(flags)
    assert (target.arch, target.cpu) == ("aarch64", cpu)
    assert target.has(has) and not any(target.has([f]) for f in lacks)
    assert device.int8_activations == "prefill"


def _pi_plan(quant_mode: str = "int8") -> kernel_choice.KernelPlan:
    from iree_glm.compiler.target import device_target
    from iree_glm.planner.profile import load_profile

    device = next(d for d in load_profile("raspberry-pi-5").devices if d.kind == "cpu")
    req = kernel_choice.KernelRequest(device_target(device), (), quant_mode, "int8", "prefill", "f32", sparse=False, staged=False,
                                      attention_wanted=True, int8_prefill_wanted=True, glue_wanted=True)
    return kernel_choice.choose(req)


def test_cross_compiling_for_arm_never_reads_the_build_machine(monkeypatch):
    """A Pi bundle built here gets the dotprod set from the profile's CPU: /proc/cpuinfo (the
    build machine's features) is not read."""
    from iree_glm.kernels import target_cpu

    def no_host(*_):
        raise AssertionError("read the build machine's CPU features")

    monkeypatch.setattr(target_cpu, "host_features", no_host)
    monkeypatch.setattr(toolchain, "missing_features", no_host)
    monkeypatch.setattr(toolchain, "_compiler", lambda arch: [f"{arch}-linux-gnu-gcc"])
    plan = _pi_plan()
    assert (plan.int8.kernel_set, plan.int8.decode, plan.int8.prefill) == ("aarch64_dotprod", "matvec", "matmul")
    assert plan.int8.features == ["dotprod", "fullfp16"]
    # Attention calls the set's NEON flash-attention kernel.
    assert (plan.attention.kernel, plan.attention.kernel_set, plan.attention.reason) == ("dotprod", "aarch64_dotprod", None)


def test_without_an_aarch64_compiler_arm_builds_go_on_without_our_kernels(monkeypatch):
    """No cross compiler: the build takes IREE's forms (integer prompts: its mmt4d) and the
    manifest's choices say why."""
    monkeypatch.setattr(toolchain.shutil, "which", lambda name: None)
    assert toolchain.build_reason(toolchain.AARCH64_DOTPROD) == "no aarch64 C compiler (aarch64-linux-gnu-gcc or clang)"
    plan = _pi_plan()
    assert (plan.int8.kernel, plan.int8.prefill) == ("generic", "mmt4d")
    assert plan.int8.reason == plan.attention.reason == "no aarch64 C compiler (aarch64-linux-gnu-gcc or clang)"


def test_the_cross_compiler_is_debians_or_clang_told_the_target(monkeypatch):
    installed = {"clang"}
    monkeypatch.setattr(toolchain.shutil, "which", lambda name: name if name in installed else None)
    assert toolchain._compiler("aarch64") == ["clang", "--target=aarch64-linux-gnu"]
    installed.add("aarch64-linux-gnu-gcc")
    assert toolchain._compiler("aarch64") == ["aarch64-linux-gnu-gcc"]


@pytest.mark.skipif(toolchain.build_reason(toolchain.AARCH64_DOTPROD) is not None,
                    reason=str(toolchain.build_reason(toolchain.AARCH64_DOTPROD)))
def test_an_arm_object_links_as_embedded_elf_arm_64(tmp_path):
    """The executable format the MLIR names is the object's own (IREE links an object only into
    executables of its format)."""
    from iree_glm.kernels import int8

    obj = int8.build_object(tmp_path, toolchain.AARCH64_DOTPROD)
    assert toolchain.object_format(obj) == "embedded-elf-arm_64"
    assert '"embedded-elf-arm_64"> = [#hal.executable.object<{path = "' + str(obj) in int8.definitions(64, 2, obj)
    (tmp_path / "junk.o").write_bytes(b"not an object")
    with pytest.raises(toolchain.KernelUnavailable, match="not an x86-64 or aarch64 ELF object"):
        toolchain.object_format(tmp_path / "junk.o")


def test_every_kernel_a_set_lists_has_its_source():
    for s in toolchain.KERNEL_SETS:
        for kernel in s.kernels:
            assert s.source(kernel).is_file(), (s.name, kernel)
    assert toolchain.AARCH64_I8MM.base is toolchain.AARCH64_DOTPROD
    assert set(toolchain.AARCH64_DOTPROD.features) <= set(toolchain.AARCH64_I8MM.features)
    # Every set has an attention kernel, its own or its base's (the i8mm set's is the dotprod set's).
    assert {s.name: s.provider("attention").name for s in toolchain.KERNEL_SETS} == {
        "x86_64_amx": "x86_64_avx512", "x86_64_avx512": "x86_64_avx512", "x86_64_avx2": "x86_64_avx2",
        "aarch64_i8mm": "aarch64_dotprod", "aarch64_dotprod": "aarch64_dotprod"}
    with pytest.raises(ValueError, match="kernel set aarch64_dotprod has no bf16_matmul kernel"):
        toolchain.AARCH64_DOTPROD.source("bf16_matmul")


def test_a_profile_can_name_an_older_set_but_not_one_the_target_lacks():
    """The host profile's `kernel_set` (profile calibrate --lowering measures it per CPU kind):
    an AVX-512 VNNI target may take the AVX2 set; an AVX2 target naming the AVX-512 set is one
    line naming the missing features."""
    from iree_glm.errors import UserError

    zen4 = Target("llvm-cpu", "local-task", (*host_cpu_target().flags, "--iree-llvmcpu-target-cpu=znver4"))
    if toolchain.build_reason(toolchain.X86_64_AVX2) is None:
        assert kernel_choice.kernel_set_for(zen4, (), "x86_64_avx2")[0] is toolchain.X86_64_AVX2
        assert kernel_choice.kernel_set_for(zen4, ())[0] is toolchain.X86_64_AVX512
    zen3 = Target("llvm-cpu", "local-task", (*host_cpu_target().flags, "--iree-llvmcpu-target-cpu=znver3"))
    with pytest.raises(UserError, match=r"^profile kernel_set = 'x86_64_avx512': target x86_64 znver3 lacks avx512f, avx512bw, avx512vl, avx512vnni$"):
        kernel_choice.kernel_set_for(zen3, (), "x86_64_avx512")


def test_the_profile_names_every_kernel_set():
    from iree_glm.planner.profile import KERNEL_SET_CHOICES

    assert KERNEL_SET_CHOICES == ("best", *(s.name for s in toolchain.KERNEL_SETS))


def test_the_avx512_set_has_its_own_prompt_kernels_and_attention():
    s = toolchain.X86_64_AVX512
    assert s.source("int8").parent.name == s.source("int4").parent.name == s.source("attention").parent.name == "x86_64_avx512"
    assert set(toolchain.X86_64_AVX2.features) <= set(s.features)  # its files include the AVX2 code


def test_the_amx_set_has_its_own_int8_and_int4_kernels():
    s = toolchain.X86_64_AMX
    assert s.source("int8").parent.name == s.source("int4").parent.name == "x86_64_amx" and toolchain.KERNEL_SETS[0] is s
    assert s.provider("int4") is s and s.provider("attention") is toolchain.X86_64_AVX512
    assert set(toolchain.X86_64_AVX512.features) < set(s.features) and {"amx-tile", "amx-int8"} <= set(s.features)


def test_cpuinfo_amx_flags_are_llvm_names(monkeypatch, tmp_path):
    """/proc/cpuinfo's amx_tile / amx_int8 are LLVM's amx-tile / amx-int8, so `host` on a
    Sapphire Rapids machine selects the AMX set as the name sapphirerapids does."""
    from iree_glm.bundle import cpu_features

    flags = "fpu avx2 fma f16c avx512f avx512bw avx512vl avx512_vnni avx512vbmi avx512_bf16 amx_bf16 amx_tile amx_int8"
    monkeypatch.setattr(cpu_features, "host_arch", lambda: "x86_64")
    monkeypatch.setattr(cpu_features, "Path", lambda _: type("P", (), {"read_text": lambda self: f"flags\t\t: {flags}\n"})())
    have = cpu_features.host_features()
    assert {"amx-tile", "amx-int8", "amx-bf16", "avx512vnni"} <= have and "amx_tile" not in have
    from iree_glm.kernels import target_cpu

    monkeypatch.setattr(target_cpu, "host_arch", lambda: "x86_64")
    assert toolchain.select(from_flags(["--iree-llvmcpu-target-cpu=host"]))[0] is toolchain.X86_64_AMX


@pytest.mark.skipif(toolchain.build_reason(toolchain.X86_64_AMX) is not None, reason=str(toolchain.build_reason(toolchain.X86_64_AMX)))
@pytest.mark.parametrize("kernel_set", [toolchain.X86_64_AMX, toolchain.X86_64_AVX512, toolchain.X86_64_AVX2], ids=lambda s: s.short)
def test_the_matrix_dispatch_takes_the_objects_typed_rows_per_call(kernel_set, tmp_path):
    """A matrix dispatch's grid and row ranges are the rows per call its kernel set states for
    the kernel (256 for the AMX int8 kernel, 64 where a set states none), whatever the object
    file is called (building needs a compiler, not the set's CPU)."""
    import shutil
    from pathlib import Path

    from iree_glm.kernels import int4, int8

    for module, kernel in ((int8, "int8"), (int4, "int4")):
        built = module.build_object(tmp_path, kernel_set)
        assert (built.kernel, built.kernel_set) == (kernel, kernel_set)
        renamed = toolchain.KernelObject(Path(shutil.copy(built.path, tmp_path / f"renamed_{kernel}.o")), kernel, kernel_set)
        rows = kernel_set.rows_per_call(kernel)
        assert renamed.rows_per_call == rows == dict(kernel_set.provider(kernel).matmul_rows).get(kernel, toolchain.MATMUL_ROWS)
        text = int8.matmul_definitions(64, 2, renamed, None) if kernel == "int8" else int4.definitions(64, 32, 32, renamed, None)
        assert f"(s0 ceildiv {rows})" in text and f"%chunk = arith.constant {rows} : index" in text
        assert f'path = "{renamed.path}"' in text
    assert toolchain.X86_64_AMX.rows_per_call("int8") == 256 and toolchain.X86_64_AVX512.rows_per_call("int8") == 64
    assert toolchain.X86_64_AVX2.rows_per_call("attention") == toolchain.MATMUL_ROWS
