"""A local backend starts its engine only when something asks it to generate (moderation.backends.LazyBackend)."""

import pytest

from moderation.backends import BackendConfig, LazyBackend, load_backend
from moderation.backends.fake import FakeBackend
from moderation.factory import RunSettings, build_moderator


def test_a_lazy_backend_starts_on_its_first_request_and_names_the_model_as_the_started_one(monkeypatch):
    started = []

    class Recording(FakeBackend):
        def __init__(self, config):
            started.append(config)
            super().__init__(config)

    lazy = LazyBackend("transformers", Recording, BackendConfig(model="base"))
    assert not started and not lazy.is_started and hasattr(lazy, "label_probs")  # as the real one (FakeBackend has probes)
    lazy.close()  # closing a backend that never started starts nothing
    assert not started
    from moderation.model import model_profile, model_sha, resolve_model

    assert lazy.model_id == model_profile("base").label and lazy.model_sha == model_sha(resolve_model("base"))
    assert lazy.generate([]) == [] and len(started) == 1 and lazy.is_started
    lazy.generate([])
    assert len(started) == 1  # once


def test_only_local_backends_are_lazy():
    assert isinstance(load_backend("transformers", BackendConfig(model="base"), lazy=True), LazyBackend)
    assert isinstance(load_backend("fake", BackendConfig(), lazy=True), FakeBackend)


@pytest.mark.parametrize("rationale, lazy", [("built", True), ("llm", False)])
def test_the_default_model_with_built_rationales_starts_no_engine(rationale, lazy):
    """Score first with built rationales makes whole verdicts without generating: no engine to start."""
    settings = RunSettings(backend="transformers", rationale=rationale)
    moderator = build_moderator(settings)
    try:
        assert isinstance(moderator.backend, LazyBackend) == lazy
        if lazy:
            from moderation.items import Item

            [outcome] = moderator.moderate([Item("a", "listing", {"title": "Rolex Submariner AAA replica, 1:1, WhatsApp me"})])
            assert outcome.verdict is not None and not moderator.backend.is_started
    finally:
        moderator.backend.close()
