"""The number format this machine computes fastest in, chosen once, here.

bfloat16 is four times float32 on a CPU with native bfloat16 instructions (`avx512_bf16` or
`amx_bf16`), and about 85 times slower where it is emulated (AVX2-only CPUs: AMD Zen 2/3, Intel
before Cooper Lake, every consumer Intel chip); docs/throughput.md has the figures. So `auto`
means bfloat16 only where the CPU has it natively, float32 otherwise, and on a GPU bfloat16 where
the GPU supports it, else float16. Every place that loads weights (vLLM's engine, the policy heads'
feature model, the trainers, the benchmarks) asks `resolve_dtype`, and an explicit `--dtype` (or a
trainer's `dtype` setting) still wins.

torch is imported inside the functions: `import moderation` must not need it.
"""

from __future__ import annotations

import platform
import time
from functools import cache
from pathlib import Path

DTYPES = ("auto", "float32", "bfloat16", "float16")
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of CPUs with bfloat16 instructions
# torch's CPU dispatch levels at which its kernels use AVX-512 (and so the CPU's bfloat16 instructions);
# ATEN_CPU_CAPABILITY=avx2 caps them, and then bfloat16 is emulated even on a CPU that has it.
AVX512_CAPABILITIES = ("AVX512", "AVX512_BF16", "AMX", "AVX512_VNNI")


@cache
def _cpuinfo(*keys: str) -> str:
    """The value of the first /proc/cpuinfo line starting with one of `keys` ('' where unreadable)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    return next((x for x in text.splitlines() if x.startswith(keys)), "").partition(":")[2].strip()


@cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo); empty where they cannot be read."""
    return frozenset(_cpuinfo("flags", "Features").split())


@cache
def cpu_capability() -> str:
    """torch's CPU dispatch level ('AVX512', 'AVX2', ...), or 'unknown' without torch."""
    try:
        import torch
    except ImportError:
        return "unknown"
    return torch.backends.cpu.get_cpu_capability()


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively: it has the instructions and torch may use them."""
    return bool(cpu_flags() & set(NATIVE_BF16_FLAGS)) and cpu_capability() in AVX512_CAPABILITIES


def on_gpu() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def machine_dtype() -> str:
    """The weights format `auto` means here: bfloat16 where native (CPU) or supported (GPU); on a GPU
    without it float16; on a CPU without it float32."""
    if on_gpu():
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "bfloat16" if native_bf16() else "float32"


def check_dtype(dtype: str, where: str = "dtype") -> str:
    """`dtype` if it is one of DTYPES, else a ConfigError naming `where`."""
    from moderation.errors import ConfigError

    if dtype not in DTYPES:
        raise ConfigError(f"{where} must be one of {', '.join(DTYPES)}, got {dtype!r}")
    return dtype


def resolve_dtype(dtype: str = "auto") -> str:
    """A concrete format: `dtype` as given, or the machine's for `auto`."""
    check_dtype(dtype)
    return machine_dtype() if dtype == "auto" else dtype


def torch_dtype(dtype: str = "auto"):
    """`resolve_dtype` as a torch dtype."""
    import torch

    return getattr(torch, resolve_dtype(dtype))


def describe(dtype: str = "auto") -> dict[str, str | bool]:
    """What a run's provenance, summary and benchmark tables say of the machine."""
    return {"dtype": resolve_dtype(dtype), "cpu_capability": cpu_capability(), "native_bf16": native_bf16(),
            "device": "cuda" if on_gpu() else "cpu", "cpu": cpu_model()}


def cpu_model() -> str:
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def matmul_gflops(dtype: str, seconds: float = 0.5, shape: tuple[int, int, int] = (512, 576, 1536)) -> float:
    """Measured CPU matrix-product rate in GFLOP/s for `dtype`, over about `seconds` (the shape of one
    SmolLM2-135M MLP product on a 512-token batch)."""
    import torch

    m, k, n = shape
    a, b = torch.randn(m, k, dtype=torch_dtype(dtype)), torch.randn(k, n, dtype=torch_dtype(dtype))
    a @ b  # the first product pays for allocation and kernel choice
    count, started = 0, time.perf_counter()
    while count == 0 or time.perf_counter() - started < seconds:
        a @ b
        count += 1
    return 2 * m * k * n * count / (time.perf_counter() - started) / 1e9
