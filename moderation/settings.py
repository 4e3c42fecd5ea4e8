"""Flags made from settings dataclasses, so each setting's default and help are written once (on
its field), as vLLM's `EngineArgs.add_cli_args` / `from_cli_args` do.

A field becomes `--field-name`, typed by its default (a bool field is `--x/--no-x`, a tuple field
a flag given once per value), with its `metadata["help"]` and the default appended (unless
`default_in_help` says the help tells it already); `choices` in the metadata restricts the values,
`type` gives the type of a field whose default is None, and `metavar` names the value in the usage.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")

DATA_DIR_HELP = "public data sets directory (default ../shared/datasets, or $MODERATION_DATA_DIR)"
POLICY_HELP = ("policy file: the taxonomy (policy ids, definitions, severities, actions) verdicts, scores and metrics "
               "follow (default prompts/policy.yaml; see the README's policy section to write your own)")


def add_fields(parser, cls: type, names: list[str] | None = None) -> None:
    """Add a flag for each field of the dataclass `cls` (or only those in `names`)."""
    for f in dataclasses.fields(cls):
        if names is not None and f.name not in names:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        flag, text = "--" + f.name.replace("_", "-"), f.metadata.get("help", "")
        kind = type(default) if default is not None else f.metadata.get("type")
        named = {key: f.metadata[key] for key in ("metavar", "choices") if key in f.metadata}
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=text)
        elif kind is tuple:  # argparse appends to a list of its own; from_args gets a list
            parser.add_argument(flag, action="append", default=list(default), help=text, **named)
        else:
            told = default is None or f.metadata.get("default_in_help", False)
            kwargs: dict[str, Any] = {"default": default, "help": text if told else f"{text} (default {default})"}
            if kind is not None:
                kwargs["type"] = kind
            parser.add_argument(flag, **kwargs, **named)


def from_args(cls: type[T], args: argparse.Namespace, names: list[str] | None = None, **overrides) -> T:
    """The settings the flags of `add_fields` parsed (those in `names`, if given; fields without a
    flag keep their defaults)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
              if hasattr(args, f.name) and (names is None or f.name in names)}
    return cls(**{**values, **overrides})
