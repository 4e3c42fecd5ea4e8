"""Flags made from settings dataclasses: each setting's default and help written once."""

import argparse
import dataclasses
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


def run_flags(*flags):
    from moderation.cli import build_parser

    return build_parser().parse_args(["run", "in.jsonl", "-o", "out.jsonl", *flags])


def test_run_settings_are_made_once_from_the_flags_their_fields_make():
    from moderation.backends.base import BackendConfig
    from moderation.cli import build_parser
    from moderation.factory import RunSettings

    default = RunSettings.from_args(run_flags())
    assert default == RunSettings() and default.backend_config == BackendConfig()
    settings = RunSettings.from_args(run_flags(
        "--backend", "fake", "--chunk-size", "8", "--adapter", "eu=a", "--adapter", "b", "--no-scores", "--free-evidence",
        "--max-tokens", "64", "--dtype", "float32", "--error-budget", "0.2", "--screen", "s", "--verdict-cache", "v.sqlite"))
    assert (settings.backend, settings.chunk_size, settings.adapter, settings.scores, settings.free_evidence) == (
        "fake", 8, ("eu=a", "b"), False, True)
    assert (settings.error_budget, settings.screen, settings.verdict_cache) == (0.2, "s", "v.sqlite")
    engine = settings.backend_config
    assert (engine.max_tokens, engine.dtype, engine.batch_size, engine.model) == (64, "float32", 8, "default")
    # serve has no --error-budget, eval no --screen: those keep their defaults
    serve = RunSettings.from_args(build_parser().parse_args(["serve", "--model", "base", "--heads", "h"]))
    assert (serve.error_budget, serve.backend_config.model, serve.heads) == (0.5, "base", "h")
    assert RunSettings.from_args(build_parser().parse_args(["eval", "--backend", "fake"])).screen is None


def test_every_run_setting_is_a_flag_of_run_with_its_fields_help(capsys):
    from moderation.cli import main
    from moderation.factory import RunSettings

    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = "".join(capsys.readouterr().out.split())  # argparse wraps lines at spaces and hyphens
    for f in dataclasses.fields(RunSettings):
        if f.name != "backend_config":
            assert "--" + f.name.replace("_", "-") in text and "".join(f.metadata["help"].split()) in text, f.name
    assert "triesperitembeforeanerrorrecord(default2)" in text  # the default, appended once


@pytest.mark.parametrize("name,value", [("chunk_size", 0), ("max_attempts", 0), ("rationale_chars", 0), ("error_budget", 1.5)])
def test_an_impossible_run_setting_is_refused_by_name(name, value):
    from moderation.errors import ConfigError
    from moderation.factory import RunSettings

    with pytest.raises(ConfigError, match=f"RunSettings.{name}"):
        RunSettings(**{name: value})


def test_the_ray_actors_receive_the_settings_not_the_namespace():
    pytest.importorskip("ray")
    import pickle

    from moderation.distributed import ModerateBatch
    from moderation.factory import RunSettings

    settings = RunSettings.from_args(run_flags("--backend", "fake", "--chunk-size", "4", "--error-budget", "0.25"))
    assert pickle.loads(pickle.dumps(settings)) == settings  # what crosses to an actor
    actor = ModerateBatch(settings, actor_gpus=0)
    assert (actor.options.chunk_size, actor.options.error_budget) == (4, 0.25)
    assert actor.chunks.moderator.provenance()["backend"] == "fake"


def test_the_review_apps_flags_come_from_its_settings():
    from moderation.cli import build_parser
    from moderation.review.app import ReviewSettings
    from moderation.review.cli import WEB_FLAGS
    from moderation.settings import from_args

    args = build_parser().parse_args(["review", "serve", "--secure-cookies", "--forwarded-allow-ips", "10.0.0.0/8"])
    assert from_args(ReviewSettings, args, WEB_FLAGS) == ReviewSettings(secure_cookies=True, forwarded_allow_ips="10.0.0.0/8")
    assert from_args(ReviewSettings, build_parser().parse_args(["review", "serve"]), WEB_FLAGS) == ReviewSettings()
