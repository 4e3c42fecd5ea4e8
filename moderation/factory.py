"""Builds what a run needs (backend, moderator, options, screen, verdict store) from the run
settings: one place for the CLI, the Ray actors, `eval`, `serve` and the scripts.

The settings are an argparse Namespace made by `add_backend_args` (and the run's own flags);
nothing here imports the CLI.
"""

from __future__ import annotations

import argparse
import sys

from moderation.backends.base import BackendConfig
from moderation.errors import ConfigError
from moderation.schema import RATIONALE_MAX_CHARS
from moderation.settings import add_fields, from_args

# BackendConfig fields that are flags of the same name (default and help written once, on the field)
ENGINE_FLAGS = ["dtype", "gpu_memory_utilization", "enforce_eager", "max_model_len", "block_size", "max_num_seqs",
                "max_num_batched_tokens", "kv_cache_gib", "chunked_prefill", "base_url", "concurrency"]


def add_backend_args(p) -> None:
    """The flags that choose and configure the backend, model, prompt and thresholds."""
    p.add_argument("--backend", default="vllm", help="vllm (default), transformers, openai or fake")
    p.add_argument("--model", default="default",
                   help="'default' (SmolLM2-135M-Instruct with the shipped moderation adapter merged, its prompt and "
                        "thresholds), 'base' (the zero-shot SmolLM2-135M-Instruct), or a Hugging Face model directory")
    p.add_argument("--policy", help="policy file (default prompts/policy.yaml)")
    p.add_argument("--prompt", help="prompt template (default: the model's own, else prompts/moderate.v1.txt)")
    p.add_argument("--thresholds", help="JSON file of {policy: threshold}: verdicts follow the scores cut at them (score "
                                        "first) and records list the policies that reach them as `flagged`; default: "
                                        "the model's shipped thresholds ('default' has them); 'none' for none")
    p.add_argument("--heads", metavar="DIR",
                   help="policy heads to score with instead of the model's own (a folder written by "
                        "`python finetune/fit_heads.py --out DIR`, for example refitted on case checks)")
    p.add_argument("--chunk-size", type=int, default=64, help="items per model call and per checkpoint (default 64)")
    add_fields(p, BackendConfig, ["max_tokens"])
    p.add_argument("--max-attempts", type=int, default=2, help="tries per item before an error record (default 2)")
    add_fields(p, BackendConfig, ENGINE_FLAGS)
    p.add_argument("--rationale-chars", type=int, default=RATIONALE_MAX_CHARS,
                   help=f"the rationale's length budget in characters, at most {RATIONALE_MAX_CHARS} (default {RATIONALE_MAX_CHARS})")
    p.add_argument("--free-evidence", action="store_true", help="do not constrain evidence to quotes from the item")
    p.add_argument("--adapter", action="append", default=[], metavar="[NAME=]PATH",
                   help="a LoRA adapter directory (PEFT) to apply; vLLM serves it with enable_lora")
    p.add_argument("--scores", action=argparse.BooleanOptionalAction, default=True,
                   help="per-policy confidence scores from token log-probabilities (vllm, transformers, fake; default on)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_stage_args(p) -> None:
    """The flags of what `run` and `serve` put before the model: the screen and the verdict cache."""
    p.add_argument("--screen", metavar="DIR",
                   help="a cheap first stage (from `moderation screen fit`): items it is confident are clean get an "
                        "allow verdict without the LLM")
    p.add_argument("--verdict-cache", metavar="PATH",
                   help="persistent SQLite verdict cache shared across runs, keyed by content, model, adapter, prompt "
                        "and policy: repeated items skip the LLM")


def run_options(args):
    from moderation.batch import RunOptions

    # thresholds: the moderator's (ChunkModerator flags at them), so the file is read once
    return RunOptions(chunk_size=args.chunk_size, error_budget=args.error_budget)


def run_screen(args):
    """The --screen first stage, or None."""
    if not args.screen:
        return None
    from moderation.screen import load_screen

    return load_screen(args.screen)


def run_store(args):
    """The --verdict-cache store, or None."""
    if not args.verdict_cache:
        return None
    from moderation.verdict_store import VerdictStore

    return VerdictStore(args.verdict_cache)


WEIGHT_BACKENDS = ("vllm", "transformers")  # backends that run the named model's own weights


def model_profile_for(args):
    """The model's shipped prompt and thresholds; they belong to its weights, so only backends that
    load them (not fake, not a remote server) take them."""
    from moderation.model import ModelProfile, model_profile

    return model_profile(args.model) if args.backend in WEIGHT_BACKENDS else ModelProfile(args.model)


def run_thresholds(args) -> dict[str, float] | None:
    """--thresholds FILE, 'none', or (unset) the model's shipped thresholds, if any; scores off: none."""
    from moderation.scoring import check_thresholds, load_thresholds

    path = getattr(args, "thresholds", None)
    if path == "none" or not getattr(args, "scores", True):
        return None
    if path is None:
        shipped = model_profile_for(args).thresholds
        return check_thresholds(shipped, f"the thresholds shipped with --model {args.model}") if shipped else None
    return load_thresholds(path)


def load_adapters(specs: list[str]):
    from moderation.model import load_adapter

    return tuple(load_adapter(spec) for spec in specs)


def build_moderator(args):
    """The backend named on the command line (with every --adapter loaded), wrapped in a
    Moderator with policy and prompt that asks for the base model."""
    from moderation.backends import load_backend
    from moderation.pipeline import Moderator
    from moderation.policy import load_policy
    from moderation.prompts import load_template

    policy, template = load_policy(args.policy), load_template(args.prompt or model_profile_for(args).prompt)
    adapters = load_adapters(args.adapter)
    config = from_args(BackendConfig, args, ["model", "max_tokens", *ENGINE_FLAGS], batch_size=args.chunk_size,
                       adapters=adapters)
    thresholds, scorer = run_thresholds(args), run_scorer(args)  # bad files fail before the engine loads
    print(f"loading backend {args.backend} with model {args.model} ...", file=sys.stderr)
    backend = load_backend(args.backend, config)
    return Moderator(backend, policy, template, max_attempts=args.max_attempts, grounded_evidence=not args.free_evidence,
                     scores=args.scores, thresholds=thresholds, scorer=scorer,
                     rationale_chars=args.rationale_chars)


def run_scorer(args):
    """--heads DIR, else the model's own policy heads (moderation.heads) where it ships them, when
    scores are on; else None (scores, if on, come from the backend's token probes)."""
    chosen = getattr(args, "heads", None)
    if chosen and not args.scores:
        raise ConfigError("--heads scores items, so it cannot go with --no-scores")
    heads = chosen or model_profile_for(args).heads
    if not heads or not args.scores:
        return None
    from moderation.heads import load_heads

    return load_heads(heads)


def run_moderator(args):
    """For run and eval: the moderator asking for the one --adapter given, if any."""
    if len(args.adapter) > 1:
        raise ConfigError(f"`moderation {args.command}` applies one --adapter, got {len(args.adapter)}")
    moderator = build_moderator(args)
    adapters = moderator.backend.config.adapters
    return moderator.with_adapter(adapters[0]) if adapters else moderator
