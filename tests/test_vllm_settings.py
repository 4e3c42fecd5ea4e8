"""The vLLM engine settings a run can tune reach the engine as set, and only when set."""

import argparse

import pytest

from moderation.backends.base import BackendConfig
from moderation.backends.vllm_backend import engine_kwargs
from moderation.errors import ConfigError
from moderation.factory import add_backend_args


def settings(*flags):
    parser = argparse.ArgumentParser()
    add_backend_args(parser)
    return parser.parse_args(list(flags))


def test_unset_engine_settings_leave_the_engine_its_defaults():
    kwargs = engine_kwargs(BackendConfig(), "/m", on_cpu=True)
    assert not {"max_num_seqs", "max_num_batched_tokens", "enable_chunked_prefill", "block_size", "kv_cache_memory_bytes"} & set(kwargs)
    assert kwargs["enforce_eager"] is True and kwargs["enable_prefix_caching"] is True


def test_flags_become_engine_settings():
    args = settings("--max-num-seqs", "32", "--max-num-batched-tokens", "1024", "--no-chunked-prefill", "--block-size", "32",
                    "--kv-cache-gib", "2")
    config = BackendConfig(max_num_seqs=args.max_num_seqs, max_num_batched_tokens=args.max_num_batched_tokens,
                           chunked_prefill=args.chunked_prefill, block_size=args.block_size, kv_cache_gib=args.kv_cache_gib)
    kwargs = engine_kwargs(config, "/m", on_cpu=True)
    assert (kwargs["max_num_seqs"], kwargs["max_num_batched_tokens"], kwargs["enable_chunked_prefill"], kwargs["block_size"]) == (32, 1024, False, 32)
    assert kwargs["kv_cache_memory_bytes"] == 2 * 2**30


@pytest.mark.parametrize("field", ["max_num_seqs", "max_num_batched_tokens"])
def test_a_non_positive_engine_limit_is_refused_by_name(field):
    with pytest.raises(ConfigError, match=field):
        BackendConfig(**{field: 0})
