"""Builds what a run needs (backend, moderator, options, screen, verdict store) from its
settings, `RunSettings`: one place for the CLI, the Ray actors, `eval`, `serve` and the scripts.

`RunSettings` is made once from the flags (`RunSettings.from_args`), and the flags are made from
its fields (`add_backend_args`, `add_stage_args`), so each default and help is written once. It is
a frozen dataclass, so it pickles: the Ray actors receive it, not the command line's Namespace.
Nothing here imports the CLI.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field

from moderation.backends.base import BackendConfig
from moderation.batch import RunOptions
from moderation.errors import ConfigError
from moderation.rationale import RATIONALE_MODES
from moderation.schema import RATIONALE_MAX_CHARS
from moderation.settings import POLICY_HELP, add_fields, from_args

# BackendConfig fields that are flags of the same name (default and help written once, on the field)
ENGINE_FLAGS = ["dtype", "gpu_memory_utilization", "enforce_eager", "max_model_len", "block_size", "max_num_seqs",
                "max_num_batched_tokens", "kv_cache_gib", "chunked_prefill", "base_url", "concurrency"]


def _batch_field(name: str):
    """A RunOptions field (moderation.batch) as a run setting: its default and help are written there."""
    source = next(f for f in dataclasses.fields(RunOptions) if f.name == name)
    return field(default=source.default, metadata=source.metadata)


@dataclass(frozen=True)
class RunSettings:
    """What the model side of a run needs: the backend, model, prompt, policy, thresholds and scorer,
    how records are made, the stages before the model, and the engine's own settings."""

    backend: str = field(default="vllm", metadata={"help": "vllm (default), transformers, openai or fake",
                                                   "default_in_help": True})
    model: str = field(default="default", metadata={"default_in_help": True, "help": (
        "'default' (SmolLM2-135M-Instruct with the shipped moderation adapter merged, its prompt and thresholds), "
        "'base' (the zero-shot SmolLM2-135M-Instruct), or a Hugging Face model directory")})
    policy: str | None = field(default=None, metadata={"help": POLICY_HELP})
    prompt: str | None = field(default=None, metadata={
        "help": "prompt template (default: the model's own, else prompts/moderate.v1.txt)"})
    thresholds: str | None = field(default=None, metadata={"help": (
        "JSON file of {policy: threshold}: verdicts follow the scores cut at them (score first) and records list the "
        "policies that reach them as `flagged`; default: the model's shipped thresholds ('default' has them); "
        "'none' for none")})
    heads: str | None = field(default=None, metadata={"metavar": "DIR", "help": (
        "policy heads to score with instead of the model's own (a folder written by "
        "`python finetune/fit_heads.py --out DIR`, for example refitted on case checks)")})
    chunk_size: int = _batch_field("chunk_size")
    max_attempts: int = field(default=2, metadata={"help": "tries per item before an error record"})
    rationale_chars: int = field(default=RATIONALE_MAX_CHARS, metadata={
        "help": f"the rationale's length budget in characters, at most {RATIONALE_MAX_CHARS}"})
    rationale: str = field(default="built", metadata={"choices": RATIONALE_MODES, "help": (
        "how a flagged item's rationale is made: 'built' from facts (the decided action, each policy's title and "
        "summary from the policy file, the evidence, the region rule; in the item's language where the policy file "
        "has it), with no generation when scores decide; or 'llm', written by the model, then checked and replaced "
        "by the built one if it names a policy or fact that the verdict and the item do not hold")})
    free_evidence: bool = field(default=False, metadata={"help": "do not constrain evidence to quotes from the item"})
    adapter: tuple[str, ...] = field(default=(), metadata={
        "metavar": "[NAME=]PATH", "help": "a LoRA adapter directory (PEFT) to apply; vLLM serves it with enable_lora"})
    scores: bool = field(default=True, metadata={
        "help": "per-policy confidence scores from token log-probabilities (vllm, transformers, fake; default on)"})
    screen: str | None = field(default=None, metadata={"metavar": "DIR", "help": (
        "a cheap first stage (from `moderation screen fit`): items it is confident are clean get an allow verdict "
        "without the LLM")})
    verdict_cache: str | None = field(default=None, metadata={"metavar": "PATH", "help": (
        "persistent SQLite verdict cache shared across runs, keyed by content, model, adapter, prompt and policy: "
        "repeated items skip the LLM")})
    error_budget: float = _batch_field("error_budget")
    backend_config: BackendConfig = field(default_factory=BackendConfig, metadata={
        "help": "The engine's settings (--max-tokens and ENGINE_FLAGS); its model and batch size are the run's own."})

    def __post_init__(self):
        for name in ("chunk_size", "max_attempts"):
            if getattr(self, name) < 1:
                raise ConfigError(f"RunSettings.{name} must be at least 1, got {getattr(self, name)!r}")
        if not 1 <= self.rationale_chars <= RATIONALE_MAX_CHARS:
            raise ConfigError(f"RunSettings.rationale_chars must be in 1..{RATIONALE_MAX_CHARS}, got {self.rationale_chars!r}")
        if self.rationale not in RATIONALE_MODES:
            raise ConfigError(f"RunSettings.rationale must be one of {', '.join(RATIONALE_MODES)}, got {self.rationale!r}")
        if not 0 <= self.error_budget <= 1:
            raise ConfigError(f"RunSettings.error_budget must be in [0, 1], got {self.error_budget!r}")
        # frozen: the two normalisations below are the only writes, made before anyone sees the object
        object.__setattr__(self, "adapter", tuple(self.adapter))
        object.__setattr__(self, "backend_config", dataclasses.replace(self.backend_config, model=self.model,
                                                                       batch_size=self.chunk_size))

    @classmethod
    def from_args(cls, args) -> RunSettings:
        """The settings the flags parsed (those of add_backend_args, add_stage_args and --error-budget
        that the command has; the rest keep their defaults)."""
        engine = from_args(BackendConfig, args, ["max_tokens", *ENGINE_FLAGS])
        return from_args(cls, args, RUN_FLAGS, backend_config=engine)


RUN_FLAGS = [f.name for f in dataclasses.fields(RunSettings) if f.name != "backend_config"]


def add_backend_args(p) -> None:
    """The flags that choose and configure the backend, model, prompt and thresholds."""
    add_fields(p, RunSettings, ["backend", "model", "policy", "prompt", "thresholds", "heads", "chunk_size"])
    add_fields(p, BackendConfig, ["max_tokens"])
    add_fields(p, RunSettings, ["max_attempts"])
    add_fields(p, BackendConfig, ENGINE_FLAGS)
    add_fields(p, RunSettings, ["rationale_chars", "rationale", "free_evidence", "adapter", "scores"])
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_stage_args(p) -> None:
    """The flags of what `run` and `serve` put before the model: the screen and the verdict cache."""
    add_fields(p, RunSettings, ["screen", "verdict_cache"])


def run_options(settings: RunSettings):
    # thresholds: the moderator's (ChunkModerator flags at them), so the file is read once
    return RunOptions(chunk_size=settings.chunk_size, error_budget=settings.error_budget)


def run_screen(settings: RunSettings):
    """The --screen first stage, or None."""
    if not settings.screen:
        return None
    from moderation.policy import load_policy
    from moderation.screen import load_screen

    return load_screen(settings.screen, load_policy(settings.policy))


def run_store(settings: RunSettings):
    """The --verdict-cache store, or None."""
    if not settings.verdict_cache:
        return None
    from moderation.verdict_store import VerdictStore

    return VerdictStore(settings.verdict_cache)


WEIGHT_BACKENDS = ("vllm", "transformers")  # backends that run the named model's own weights


def model_profile_for(settings: RunSettings):
    """The model's shipped prompt and thresholds; they belong to its weights, so only backends that
    load them (not fake, not a remote server) take them."""
    from moderation.model import ModelProfile, model_profile

    return model_profile(settings.model) if settings.backend in WEIGHT_BACKENDS else ModelProfile(settings.model)


def run_thresholds(settings: RunSettings, policy) -> dict[str, float] | None:
    """--thresholds FILE, 'none', or (unset) the model's shipped thresholds, if any; scores off: none.
    Checked against the policy file's taxonomy."""
    from moderation.scoring import check_thresholds, load_thresholds

    path = settings.thresholds
    if path == "none" or not settings.scores:
        return None
    if path is None:
        shipped = model_profile_for(settings).thresholds
        return check_thresholds(shipped, f"the thresholds shipped with --model {settings.model}", policy) if shipped else None
    return load_thresholds(path, policy)


def check_model_taxonomy(settings: RunSettings, policy) -> None:
    """A fine-tuned model (its moderation.json says which taxonomy) runs only under that taxonomy.

    Raises:
        ConfigError: the model was fine-tuned for other policies; the message names both.
    """
    trained_for = model_profile_for(settings).policies
    if trained_for and tuple(trained_for) != policy.ids:
        raise ConfigError(f"--model {settings.model} was fine-tuned for another taxonomy, policies {list(trained_for)}; "
                          f"the policy file is {policy.describe()}. Run a zero-shot model on it (--model base, or a "
                          "larger instruction model), or fine-tune one for it (README, 'Your own taxonomy')")


def load_adapters(specs: tuple[str, ...]):
    from moderation.model import load_adapter

    return tuple(load_adapter(spec) for spec in specs)


def build_moderator(settings: RunSettings):
    """The backend the settings name (with every --adapter loaded), wrapped in a Moderator with
    policy and prompt that asks for the base model."""
    from moderation.backends import load_backend
    from moderation.pipeline import Moderator, check_taxonomy
    from moderation.policy import load_policy
    from moderation.prompts import load_template

    policy = load_policy(settings.policy)
    check_model_taxonomy(settings, policy)
    template = load_template(settings.prompt or model_profile_for(settings).prompt)
    config = dataclasses.replace(settings.backend_config, adapters=load_adapters(settings.adapter))
    for adapter in config.adapters:
        check_taxonomy(policy, adapter=adapter)
    thresholds, scorer = run_thresholds(settings, policy), run_scorer(settings, policy)  # bad files fail before the engine loads
    # score first with built rationales needs no generation: the engine then starts only if something asks it
    lazy = settings.rationale == "built" and scorer is not None and bool(thresholds)
    if not lazy:
        print(f"loading backend {settings.backend} with model {settings.model} ...", file=sys.stderr)
    backend = load_backend(settings.backend, config, lazy=lazy)
    return Moderator(backend, policy, template, max_attempts=settings.max_attempts,
                     grounded_evidence=not settings.free_evidence, scores=settings.scores, thresholds=thresholds,
                     scorer=scorer, rationale_chars=settings.rationale_chars, rationale=settings.rationale)


def run_scorer(settings: RunSettings, policy):
    """--heads DIR, else the model's own policy heads (moderation.heads) where it ships them, when
    scores are on; else None (scores, if on, come from the backend's token probes)."""
    if settings.heads and not settings.scores:
        raise ConfigError("--heads scores items, so it cannot go with --no-scores")
    heads = settings.heads or model_profile_for(settings).heads
    if not heads or not settings.scores:
        return None
    from moderation.heads import load_heads

    return load_heads(heads, policy, dtype=settings.backend_config.dtype)


def run_moderator(settings: RunSettings, command: str = "run"):
    """For run and eval: the moderator asking for the one --adapter given, if any (`command` names
    the subcommand in the error for more)."""
    if len(settings.adapter) > 1:
        raise ConfigError(f"`moderation {command}` applies one --adapter, got {len(settings.adapter)}")
    moderator = build_moderator(settings)
    adapters = moderator.backend.config.adapters
    return moderator.with_adapter(adapters[0]) if adapters else moderator
