"""The dtype the embedded engine starts with, chosen from the CPU's flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefixcache.engine.calibration import Calibration, calibration_prompt
from prefixcache.engine.cpu import CpuInfo, choose_dtype
from prefixcache.engine.local import LocalEngine
from prefixcache.settings import VLLMConfig

ZEN3 = "fpu sse sse2 avx avx2 fma f16c bmi2"  # AMD EPYC Zen 3: no AVX-512, no BF16
ICE_LAKE = ZEN3 + " avx512f avx512bw avx512vl avx512_vnni avx512_vbmi2"  # AVX-512, no BF16
COOPER_LAKE = ICE_LAKE + " avx512_bf16"
SAPPHIRE_RAPIDS = COOPER_LAKE + " amx_tile amx_int8 amx_bf16"


def cpu(flags: str, arch: str = "x86_64", key: str = "flags") -> CpuInfo:
    text = f"processor\t: 0\nmodel name\t: Test CPU\n{key}\t\t: {flags}\n\nprocessor\t: 1\n"
    return CpuInfo.parse(text, arch=arch)


@pytest.mark.parametrize(
    ("flags", "arch", "key", "dtype", "cpu_class"),
    [
        (ZEN3, "x86_64", "flags", "float32", "AVX2, no native BF16"),
        (ICE_LAKE, "x86_64", "flags", "float32", "AVX-512, no native BF16"),
        (COOPER_LAKE, "x86_64", "flags", "bfloat16", "AVX-512, native BF16 (avx512_bf16)"),
        (
            SAPPHIRE_RAPIDS,
            "x86_64",
            "flags",
            "bfloat16",
            "AVX-512, native BF16 (amx_bf16, avx512_bf16)",
        ),
        ("sse sse2", "x86_64", "flags", "float32", "no AVX2, no native BF16"),
        ("fp asimd sve bf16", "aarch64", "Features", "bfloat16", "SVE, native BF16 (bf16)"),
        ("fp asimd", "aarch64", "Features", "float32", "NEON, no native BF16"),
        # an x86 CPU never counts Arm's feature name, and the reverse
        ("avx2 bf16", "x86_64", "flags", "float32", "AVX2, no native BF16"),
        ("fp asimd avx512_bf16", "aarch64", "Features", "float32", "NEON, no native BF16"),
    ],
)
def test_auto_is_bfloat16_only_where_native(
    flags: str, arch: str, key: str, dtype: str, cpu_class: str
) -> None:
    info = cpu(flags, arch, key)
    choice = choose_dtype("auto", "cpu", info)
    assert choice.dtype == dtype
    assert info.cpu_class == cpu_class
    assert ("natively" in choice.reason) == (dtype == "bfloat16")
    if dtype == "float32":
        assert "no native BF16" in choice.reason and "emulate" in choice.reason


@pytest.mark.parametrize("flags", [ZEN3, SAPPHIRE_RAPIDS])
@pytest.mark.parametrize("explicit", ["bfloat16", "float32", "float16"])
def test_an_explicit_dtype_wins(flags: str, explicit: str) -> None:
    choice = choose_dtype(explicit, "cpu", cpu(flags))
    assert choice.dtype == explicit and "explicitly" in choice.reason


def test_a_gpu_keeps_vllms_auto() -> None:
    assert choose_dtype("auto", "cuda", cpu(ZEN3)).dtype == "auto"


def test_a_missing_cpuinfo_is_float32(tmp_path: Path) -> None:
    info = CpuInfo.read(tmp_path / "absent")
    assert info.model == "unknown CPU" and choose_dtype("auto", "cpu", info).dtype == "float32"


def test_the_engine_command_carries_the_choice(tmp_path: Path) -> None:
    config = VLLMConfig(device="cpu", state_dir=tmp_path, model_cache_dir=tmp_path)
    engine = LocalEngine(config)
    for flags, dtype in ((ICE_LAKE, "float32"), (SAPPHIRE_RAPIDS, "bfloat16")):
        engine.cpu = cpu(flags)
        command = engine.command()
        assert command[command.index("--dtype") + 1] == dtype
        assert engine.facts()["dtype"] == dtype
    explicit = LocalEngine(config.with_overrides(dtype="bfloat16"))
    explicit.cpu = cpu(ZEN3)
    command = explicit.command()
    assert command[command.index("--dtype") + 1] == "bfloat16"


def test_calibration_figures_round_trip_and_estimate() -> None:
    c = Calibration(
        prompt_tokens=1100,
        prompt_chars=4400,
        uncached_request_s=2.7,
        cached_tokens=1024,
        cached_request_s=0.2,
        decode_s_per_token=0.02,
        prefill_tokens_per_s=409.6,
        measured_at="2026-12-07T00:00:00+00:00",
    )
    assert Calibration.from_dict(c.to_dict()) == c
    assert Calibration.from_dict({"prompt_tokens": 3}) is None
    assert Calibration.from_dict("x") is None
    # 4,096 uncached tokens at 409.6/s, a request's fixed 0.2 s, 31 decode steps of 20 ms
    assert c.request_s(4096, 32) == pytest.approx(10.0 + 0.2 + 0.62)
    assert "410 tokens/s" in c.summary() and c.chars_per_token == 4.0


def test_the_calibration_prompt_is_fixed_and_varied() -> None:
    text = calibration_prompt()
    lines = text.splitlines()
    assert text == calibration_prompt() and len(lines) == len(set(lines)) == 48


def test_doctor_names_the_cpu_and_the_dtype_it_would_start_with(tmp_path: Path) -> None:
    from prefixcache.diagnostics.doctor import engine_facts

    config = VLLMConfig(device="cpu", state_dir=tmp_path, model_cache_dir=tmp_path)
    check = engine_facts(config, remote=False, cpu=cpu(ZEN3))
    assert check.status == "PASS"
    assert "AVX2, no native BF16" in check.detail and "--dtype float32" in check.detail
    check = engine_facts(config, remote=False, cpu=cpu(SAPPHIRE_RAPIDS))
    assert "--dtype bfloat16" in check.detail and "natively (amx_bf16" in check.detail
    remote = config.with_overrides(base_url="http://127.0.0.1:9")
    assert engine_facts(remote, remote=True, cpu=cpu(ZEN3)).status == "SKIP"
