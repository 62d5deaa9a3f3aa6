"""The engine's command line and environment, built from validated settings (no server)."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefixcache import LocalEngine, VLLMConfig


def engine(tmp_path: Path, **fields: object) -> LocalEngine:
    cfg = VLLMConfig(state_dir=tmp_path / "state", model_cache_dir=tmp_path / "models", **fields)  # type: ignore[arg-type]
    return LocalEngine(cfg)


def test_cpu_command_line(tmp_path: Path) -> None:
    cmd = engine(tmp_path, device="cpu", port=8123, extra_args=("--seed", "7")).command()
    assert cmd[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    joined = " ".join(cmd)
    assert f"--model {tmp_path}/models/smollm2-135m-instruct" in joined
    assert "--served-model-name smollm2-135m-instruct" in joined
    assert "--host 127.0.0.1 --port 8123" in joined
    for flag in ("--enable-prefix-caching", "--enable-prompt-tokens-details", "--enforce-eager"):
        assert flag in cmd
    e = engine(tmp_path, device="cpu")
    expected = "bfloat16" if e.cpu.native_bf16 else "float32"  # auto: by this CPU's flags
    assert f"--dtype {expected}" in joined
    assert "--gpu-memory-utilization" not in joined
    assert cmd[-2:] == ["--seed", "7"]
    assert "--enable-chunked-prefill" not in joined  # unset: vLLM's default


def test_gpu_command_line(tmp_path: Path) -> None:
    cmd = engine(
        tmp_path,
        device="cuda",
        default_model="meta-llama/Llama-3.2-3B-Instruct",
        tensor_parallel_size=2,
        enable_chunked_prefill=False,
        enable_prefix_caching=False,
    ).command()
    joined = " ".join(cmd)
    assert "--model meta-llama/Llama-3.2-3B-Instruct" in joined
    assert "--tensor-parallel-size 2 --gpu-memory-utilization 0.9" in joined
    assert "--no-enable-chunked-prefill" in cmd and "--no-enable-prefix-caching" in cmd
    assert "--enforce-eager" not in cmd and "--dtype auto" in joined


def test_cpu_environment_confines_temp_files(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    env = engine(tmp_path, device="cpu", cpu_kvcache_space_gib=3).environment(run_dir)
    assert env["TMPDIR"] == str(run_dir) and env["VLLM_CACHE_ROOT"].startswith(str(run_dir))
    assert env["HF_HUB_OFFLINE"] == "1"  # the embedded model never reaches a hub
    assert env["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"


def test_kv_space_comes_from_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    env = engine(tmp_path, device="cpu", cpu_kvcache_space_gib=3).environment(tmp_path)
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "3"


def test_stop_without_a_server_is_a_no_op(tmp_path: Path) -> None:
    local = engine(tmp_path, device="cpu")
    assert local.stop() is False
    assert local.status().running is False
