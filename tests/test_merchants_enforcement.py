"""The arithmetic of merchant health: points, decay, tiers, escalations, and the config's checks."""

from datetime import UTC, datetime, timedelta

import pytest
import yaml
from conftest import ROOT

from moderation.errors import ConfigError
from moderation.merchants.enforcement import Escalation, Strike, Tier, health, load_enforcement
from moderation.policy import load_policy

NOW = datetime(2026, 11, 23, tzinfo=UTC)


@pytest.fixture
def config():
    return load_enforcement(load_policy())


def strike(policy="counterfeit_ip", severity="high", days_ago=0.0, item="i1"):
    return Strike(item, policy, severity, NOW - timedelta(days=days_ago))


def test_points_are_severity_points_times_policy_weight(config):
    assert config.points("counterfeit_ip", "high") == 4 * 1.5
    assert config.points("prohibited_item", "critical") == 8 * 2.0
    assert config.points("missing_required_info", "low") == 1 * 0.5


def test_points_halve_every_half_life(config):
    assert config.half_life_days == 90
    assert config.decay(0) == 1.0
    assert config.decay(90) == pytest.approx(0.5)
    assert config.decay(180) == pytest.approx(0.25)
    assert health(config, [strike(days_ago=90)], NOW).points == pytest.approx(3.0)


def test_tier_boundaries_are_inclusive_lower_bounds(config):
    assert [config.tier_for(p) for p in (0, 3.99, 4, 11.99, 12, 24, 100)] == \
        ["good", "good", "at_risk", "at_risk", "restricted", "suspended", "suspended"]


def test_one_borderline_listing_leaves_an_honest_merchant_in_good_standing(config):
    result = health(config, [strike("misleading_claim", "medium")], NOW)
    assert result.points == pytest.approx(1.5) and result.tier == "good" and not result.escalations


def test_three_counterfeit_strikes_within_90_days_suspend(config):
    strikes = [strike(days_ago=d, item=f"i{d}") for d in (1, 30, 80)]
    result = health(config, strikes, NOW)
    assert result.points_tier == "restricted" and result.tier == "suspended"
    assert [e["rule"] for e in result.escalations] == ["repeat_counterfeit"]


def test_counterfeit_strikes_spread_past_90_days_do_not_escalate(config):
    result = health(config, [strike(days_ago=d, item=f"i{d}") for d in (1, 30, 120)], NOW)
    assert result.points == pytest.approx(6 * (0.5 ** (1 / 90) + 0.5 ** (30 / 90) + 0.5 ** (120 / 90)), abs=1e-3)
    assert result.tier == result.points_tier == "restricted" and not result.escalations


def test_one_critical_adult_strike_suspends_pending_review(config):
    result = health(config, [strike("adult_sexual", "critical", days_ago=400)], NOW)
    assert result.points_tier == "good" and result.tier == "suspended" and result.pending_review
    assert health(config, [strike("adult_sexual", "high")], NOW).tier == "at_risk"  # below min_severity


def test_strikes_dated_after_now_do_not_count(config):
    assert health(config, [strike(days_ago=-1)], NOW).points == 0


def test_config_errors_name_the_field(tmp_path):
    data = yaml.safe_load((ROOT / "prompts" / "enforcement.yaml").read_text())
    for change, message in [({"half_life_days": 0}, "half_life_days"),
                            ({"tiers": [{"name": "good", "min_points": 5}, {"name": "bad", "min_points": 9}]}, "first"),
                            ({"severity_points": {"low": 1}}, "severity_points"),
                            ({"policy_weights": {"nonsense": 1}}, "nonsense")]:
        path = tmp_path / "e.yaml"
        path.write_text(yaml.safe_dump({**data, **change}))
        with pytest.raises(ConfigError, match=message):
            load_enforcement(load_policy(), path)
    with pytest.raises(ConfigError, match="tier 'banned'"):
        from moderation.merchants.enforcement import Enforcement
        Enforcement("v", 90, {"low": 1, "medium": 2, "high": 3, "critical": 4},
                    (Tier("good", 0), Tier("bad", 5)), escalations=(Escalation("x", "spam", 1, "banned"),))
    with pytest.raises(ConfigError, match="count"):
        Escalation("x", "spam", 0, "bad")
