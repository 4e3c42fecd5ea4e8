"""Where the shipped data is read from: the policy, prompt templates, enforcement and KYC files
(prompts/), the default adapter with its thresholds and heads (finetune/adapters/), and the
built-in labelled sets (eval_sets/).

They are edited in the repository, and a source checkout reads them there. A built wheel carries a
copy that setup.py makes at build time into `moderation/_bundled/` (the same relative paths), found
through importlib.resources; the repository never holds a second copy that could drift.

Only the standard library here: setup.py loads this file on its own to learn what to copy.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

# Repository paths copied into the wheel, relative to the repository root.
BUNDLED = ("prompts", "finetune/adapters/smollm2-135m-moderation", "eval_sets")
BUNDLE_DIR = "_bundled"
SOURCE_ROOT = Path(__file__).resolve().parent.parent


def bundle_root() -> Path | None:
    """The wheel's copy of the shipped data, or None in a source checkout."""
    bundle = resources.files("moderation") / BUNDLE_DIR
    return Path(str(bundle)) if bundle.is_dir() else None


def shipped(relative: str | Path) -> Path:
    """A shipped file or folder by its path in the repository (`prompts/policy.yaml`)."""
    return (bundle_root() or SOURCE_ROOT) / relative


def find_file(path: str | Path) -> Path:
    """A file named on the command line: as given if it exists (relative to the working directory),
    else the shipped file at that repository path, so that `--prompt prompts/kyc.v1.txt` works
    from any directory once the package is installed."""
    path = Path(path)
    if path.exists() or path.is_absolute():
        return path
    candidate = shipped(path)
    return candidate if candidate.exists() else path
