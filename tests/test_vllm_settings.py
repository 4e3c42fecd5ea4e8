"""The vLLM engine settings a run can tune reach the engine as set, and only when set."""

import argparse

import pytest

from moderation.backends.base import BackendConfig
from moderation.backends.vllm_backend import engine_kwargs
from moderation.errors import ConfigError
from moderation.factory import add_backend_args
from moderation.machine import resolve_dtype


def settings(*flags):
    parser = argparse.ArgumentParser()
    add_backend_args(parser)
    return parser.parse_args(list(flags))


def test_unset_engine_settings_leave_the_engine_its_defaults_except_the_measured_cpu_ones():
    cpu, gpu = engine_kwargs(BackendConfig(), "/m", on_cpu=True), engine_kwargs(BackendConfig(), "/m", on_cpu=False)
    assert not {"max_num_seqs", "max_num_batched_tokens", "enable_chunked_prefill"} & (set(cpu) | set(gpu))
    assert cpu["enforce_eager"] is True and cpu["enable_prefix_caching"] is True
    assert (cpu["dtype"], cpu["kv_cache_memory_bytes"], cpu["block_size"]) == (resolve_dtype(), 2 * 2**30, 32)  # docs/throughput.md
    assert engine_kwargs(BackendConfig(dtype="bfloat16"), "/m", on_cpu=True)["dtype"] == "bfloat16"  # --dtype wins
    assert gpu["dtype"] == "auto" and not {"kv_cache_memory_bytes", "block_size"} & set(gpu) and gpu["enforce_eager"] is False
    engine_default = engine_kwargs(BackendConfig(kv_cache_gib=0, dtype="float32"), "/m", on_cpu=True)
    assert "kv_cache_memory_bytes" not in engine_default and engine_default["dtype"] == "float32"


def test_flags_become_engine_settings():
    args = settings("--max-num-seqs", "32", "--max-num-batched-tokens", "1024", "--no-chunked-prefill", "--block-size", "32",
                    "--kv-cache-gib", "3")
    config = BackendConfig(max_num_seqs=args.max_num_seqs, max_num_batched_tokens=args.max_num_batched_tokens,
                           chunked_prefill=args.chunked_prefill, block_size=args.block_size, kv_cache_gib=args.kv_cache_gib)
    kwargs = engine_kwargs(config, "/m", on_cpu=True)
    assert (kwargs["max_num_seqs"], kwargs["max_num_batched_tokens"], kwargs["enable_chunked_prefill"], kwargs["block_size"]) == (32, 1024, False, 32)
    assert kwargs["kv_cache_memory_bytes"] == 3 * 2**30


@pytest.mark.parametrize("field,value", [("max_num_seqs", 0), ("max_num_batched_tokens", 0), ("kv_cache_gib", -1)])
def test_an_impossible_engine_setting_is_refused_by_name(field, value):
    with pytest.raises(ConfigError, match=field):
        BackendConfig(**{field: value})
