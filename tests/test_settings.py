"""Flags made from settings dataclasses: each setting's default and help written once."""

import argparse
from dataclasses import dataclass, field

import pytest

from moderation.settings import add_fields, from_args


@dataclass(frozen=True)
class Toy:
    size: int = field(default=3, metadata={"help": "How many."})
    mode: str = field(default="fast", metadata={"help": "How.", "choices": ("fast", "slow")})
    strict: bool = field(default=False, metadata={"help": "Refuse odd input."})
    path: str | None = field(default=None, metadata={"help": "Where."})


def parser(names=None):
    p = argparse.ArgumentParser()
    add_fields(p, Toy, names)
    return p


def test_flags_take_type_default_choices_and_help_from_the_fields():
    p = parser()
    assert from_args(Toy, p.parse_args([])) == Toy()
    assert from_args(Toy, p.parse_args(["--size", "5", "--mode", "slow", "--strict", "--path", "x"])) == Toy(5, "slow", True, "x")
    assert "How many. (default 3)" in " ".join(p.format_help().split())
    with pytest.raises(SystemExit):
        p.parse_args(["--mode", "medium"])
    with pytest.raises(SystemExit):
        p.parse_args(["--size", "many"])


def test_only_the_named_fields_get_flags_and_the_rest_keep_their_defaults():
    p = parser(["size"])
    with pytest.raises(SystemExit):
        p.parse_args(["--strict"])
    assert from_args(Toy, p.parse_args(["--size", "9"]), path="p") == Toy(size=9, path="p")


def test_the_servers_flags_come_from_its_options():
    from moderation.cli import build_parser
    from moderation.serve import ServeOptions

    args = build_parser().parse_args(["serve", "--max-queue", "7", "--drain-s", "1.5"])
    options = from_args(ServeOptions, args)
    assert (options.max_queue, options.drain_s, options.max_batch) == (7, 1.5, ServeOptions().max_batch)


def test_the_engine_flags_come_from_the_backend_config_and_build_it():
    from moderation.backends.base import BackendConfig
    from moderation.factory import ENGINE_FLAGS, add_backend_args

    p = argparse.ArgumentParser()
    add_backend_args(p)
    default = from_args(BackendConfig, p.parse_args([]), ["model", "max_tokens", *ENGINE_FLAGS])
    assert default == BackendConfig()
    args = p.parse_args(["--dtype", "float32", "--no-enforce-eager", "--kv-cache-gib", "1.5", "--max-num-seqs", "16"])
    config = from_args(BackendConfig, args, ENGINE_FLAGS)
    assert (config.dtype, config.enforce_eager, config.kv_cache_gib, config.max_num_seqs) == ("float32", False, 1.5, 16)
    with pytest.raises(SystemExit):
        p.parse_args(["--dtype", "int4"])
