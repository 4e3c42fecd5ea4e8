"""The onboarding (KYC) policy and prompt for shop profiles: they load, render for every region, and run."""

import pytest
from conftest import ROOT, read_jsonl, write_jsonl

from moderation.cli import main
from moderation.items import ReadLimits, build_item
from moderation.policy import REQUIRED_REGIONS, load_policy
from moderation.prompts import load_template

KYC_POLICY, KYC_PROMPT = ROOT / "prompts" / "kyc.yaml", ROOT / "prompts" / "kyc.v1.txt"
SHOP = {"id": "s1", "kind": "merchant", "name": "Apple Official Clearance Store", "about": "Licensed pharmacy too",
        "business_type": "electronics reseller", "licence": "licensed", "contact": "WhatsApp +65 8123 4567",
        "website": "apple-official-clearance.example", "categories": ["phones"], "language": "en"}


def test_kyc_policy_maps_onboarding_concerns_onto_the_verdict_policy_ids():
    policy = load_policy(KYC_POLICY)
    assert policy.version.endswith("-kyc")
    titles = {p.id: p.title for p in policy.policies}
    assert titles["prohibited_item"] == "Prohibited business types"
    assert "licence" in titles["missing_required_info"].lower()
    assert "impersonation" in titles["counterfeit_ip"].lower()
    assert "off the platform" in titles["off_platform_transaction"]


@pytest.mark.parametrize("region", [*REQUIRED_REGIONS, "BR", None])
def test_kyc_template_renders_for_every_region(region):
    policy, template = load_policy(KYC_POLICY), load_template(KYC_PROMPT)
    item = build_item({**SHOP, "region": region}, 1, columns={}, default_kind="merchant", limits=ReadLimits())
    system, user = (m["content"] for m in template.messages(item, policy))
    assert not any(f"${name}" in system + user for name in ("policy", "region_rules", "kind", "item"))
    assert "Prohibited business types" in system and "onboarding" in system
    assert "Apple Official Clearance Store" in user and "Check this merchant profile" in user
    if region in REQUIRED_REGIONS:
        assert f"Extra rules for region {region}" in user and policy.regions[region].restricted[0] in user
    else:
        assert "Extra rules" not in user


def test_moderation_run_with_the_kyc_policy_and_prompt(tmp_path):
    shops = write_jsonl(tmp_path / "shops.jsonl", [{k: v for k, v in SHOP.items() if k != "kind"},
                                                   {"id": "s2", "name": "Oak & Iron", "about": "Handmade oak tables",
                                                    "region": "UK"}])
    out = tmp_path / "out.jsonl"
    assert main(["run", str(shops), "-o", str(out), "--kind", "merchant", "--policy", str(KYC_POLICY),
                 "--prompt", str(KYC_PROMPT), "--backend", "fake", "--no-progress"]) == 0
    records = read_jsonl(out)
    assert [r["kind"] for r in records] == ["merchant", "merchant"]
    assert {r["provenance"]["policy_version"] for r in records} == {"2026.11.1-kyc"}
    assert records[0]["verdict"]["decision"] != "allow" and records[1]["verdict"]["decision"] == "allow"


def test_the_labelled_kyc_set_validates_covers_the_concerns_and_feeds_fairness(tmp_path):
    import json

    from moderation.merchants.fairness import labelled_file

    shops = ROOT / "eval_sets" / "kyc" / "shops.jsonl"
    labelled = labelled_file(shops)
    assert len(labelled) == 24 and {item["kind"] for item, _ in labelled.values()} == {"merchant"}
    gold = [p for _, violations in labelled.values() for p in violations]
    for policy in ("prohibited_item", "missing_required_info", "counterfeit_ip", "off_platform_transaction"):
        assert gold.count(policy) >= 4
    assert {item["region"] for item, _ in labelled.values()} >= set(REQUIRED_REGIONS)
    out = tmp_path / "kyc.jsonl"
    assert main(["run", str(shops), "-o", str(out), "--kind", "merchant", "--policy", str(KYC_POLICY),
                 "--prompt", str(KYC_PROMPT), "--backend", "fake", "--no-progress"]) == 0
    stem = tmp_path / "fair"
    assert main(["merchants", "fairness", "--eval-runs", str(out), "--labels", str(shops), "-o", str(stem)]) == 0
    result = json.loads(stem.with_suffix(".json").read_text())
    assert sum(r["n"] for r in result["tables"]["enforcement_by_region"]) == 24
    # mk9-0020 (a reseller that says it is not Apple) is the fake rules' one false positive.
    assert sum(r["k"] for r in result["tables"]["overturn_by_region"]) == 1
