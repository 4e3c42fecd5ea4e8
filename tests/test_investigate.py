"""Investigations on the synthetic marketplace (eval_sets/synthetic_marketplace): every planted ring
is one group with nobody else in it, both re-registrations after a ban are caught, public
identifiers link no honest shops; and contact normalisation, one obfuscation at a time."""

import argparse
import importlib.util
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from moderation import contacts
from moderation import investigate as inv
from moderation.errors import ConfigError, InputError

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "eval_sets" / "synthetic_marketplace"
DUMPS = [DATA / f"day-{d}.jsonl" for d in range(1, 8)]
TRUTH = json.loads((DATA / "truth.json").read_text())


def generator():
    spec = importlib.util.spec_from_file_location("synthetic_marketplace", DATA / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- contacts: one obfuscation at a time ----------------------------------------------------------
OBFUSCATIONS = [  # (text, key, raw span, written to dodge a filter)
    ("Call +44 7911 123456 now", "phone:911123456", "+44 7911 123456", False),
    ("call 07911 123456", "phone:911123456", "07911 123456", False),
    ("WhatsApp 0 7 9 1 1 - 1 2 3 - 4 5 6", "phone:911123456", "0 7 9 1 1 - 1 2 3 - 4 5 6", True),
    ("tel 0.7.9.1.1.1.2.3.4.5.6 ok", "phone:911123456", "0.7.9.1.1.1.2.3.4.5.6", True),
    ("WA: zero seven nine one one one two three four five six", "phone:911123456",
     "zero seven nine one one one two three four five six", True),
    ("llámame cero siete nueve uno uno uno dos tres cuatro cinco seis", "phone:911123456",
     "cero siete nueve uno uno uno dos tres cuatro cinco seis", True),
    ("+1 415 five five five 0199", "phone:155550199", "+1 415 five five five 0199", True),
    ("电话 一三八零零一三八零零零", "phone:800138000", "一三八零零一三八零零零", True),
    ("WhatsApp ０７９１１ １２３４５６", "phone:911123456", "０７９１１ １２３４５６", True),
    ("tel 079\u200b11 123\u200c456", "phone:911123456", "079\u200b11 123\u200c456", True),
    ("order via wa.me/447911123456", "phone:911123456", "wa.me/447911123456", False),
    ("mail luxbag88 (at) gmail [dot] com", "email:luxbag88@gmail.com", "luxbag88 (at) gmail [dot] com", True),
    ("write jo at gmail dot com", "email:jo@gmail.com", "jo at gmail dot com", True),
    ("jo @ proton . me", "email:jo@proton.me", "jo @ proton . me", True),
    ("ｊｏ＠ｇｍａｉｌ．ｃｏｍ", "email:jo@gmail.com", "ｊｏ＠ｇｍａｉｌ．ｃｏｍ", True),
    ("l.u.x.b.a.g.8.8+shop@googlemail.com", "email:luxbag88@gmail.com", "l.u.x.b.a.g.8.8+shop@googlemail.com", False),
    ("微信：luxbag88", "handle:luxbag88", "luxbag88", False),
    ("VX: ｌｕｘｂａｇ８８", "handle:luxbag88", "ｌｕｘｂａｇ８８", True),
    ("wechat lux\u200bbag\u200c88", "handle:luxbag88", "lux\u200bbag\u200c88", True),
    ("telegram: @х2_сrурtо_рrо", "handle:x2_crypto_pro", "х2_сrурtо_рrо", True),  # Cyrillic х с у р о
    ("telegram: @x2_сrурτο_pro", "handle:x2_crypto_pro", "x2_сrурτο_pro", True),  # Greek τ ο, NFKC
    ("join t.me/x2_crypto_pro", "handle:x2_crypto_pro", "t.me/x2_crypto_pro", False),
    ("Line ID: slimfast.99", "handle:slimfast.99", "slimfast.99", False),
    ("ไลน์: slimfast.99 ค่ะ", "handle:slimfast.99", "slimfast.99", False),
    ("visit slim-fast-99 dot shop", "domain:slim-fast-99.shop", "slim-fast-99 dot shop", True),
    ("slim-fast-99(dot)shop", "domain:slim-fast-99.shop", "slim-fast-99(dot)shop", True),
    ("see https://cheap-deals.shop/sale/x?id=3.", "url:cheap-deals.shop/sale/x", "https://cheap-deals.shop/sale/x?id=3", False),
    ("paypal.me/LuxBag88, thanks", "payment:luxbag88", "paypal.me/LuxBag88", False),
    ("cashapp $x2cryptopro", "payment:x2cryptopro", "$x2cryptopro", False),
    ("IBAN DE89 3704 0044 0532 0130 00 please", "payment:DE89370400440532013000", "DE89 3704 0044 0532 0130 00", False),
    ("USDT TRC20 TN3W4H6rK2ce4vX9YnFQHwKENnHjoxb3m9", "payment:tn3w4h6rk2ce4vx9ynfqhwkennhjoxb3m9",
     "TN3W4H6rK2ce4vX9YnFQHwKENnHjoxb3m9", False),
]


@pytest.mark.parametrize("text, key, raw, hidden", OBFUSCATIONS, ids=[o[0][:40] for o in OBFUSCATIONS])
def test_each_obfuscation_normalises_to_one_key_and_keeps_its_raw_span(text, key, raw, hidden):
    found = {c.key: c for c in contacts.extract(text)}
    assert key in found, (text, list(found))
    c = found[key]
    assert c.raw == raw and text[c.start:c.end] == raw
    assert c.hidden is hidden


@pytest.mark.parametrize("text", [
    "Sizes 36 38 40 42 44 46, price 1299000, EAN 4006381333931, made 2024-05-12",  # numbers, no phone cue
    "Message me on telegram for prices. Product line, line dry only.",  # app names with no handle
    "Find us at etsy.com or www.tokopedia.com",  # public hosts, no path: nobody's identifier
    "Made in Italy. It is great, approx.in stock. Our shop. Shop now!",  # prose that looks like domains
    "meet at noon at the market dot",
    "IBAN DE00 1234 5678 9012 3456 78",  # fails the mod-97 check
    "only $USD 20, @bob thanks",
])
def test_ordinary_text_holds_no_identifier(text):
    assert contacts.extract(text) == []


def test_mask_replaces_identifiers_and_numbers_for_template_matching():
    a = contacts.mask("Hi Tom, pay $9.99 and text +1 415 555 0199 today")
    b = contacts.mask("Hi Tom, pay $14.99 and text 0 7 9 1 1 1 2 3 4 5 6 today")
    assert a == b == "Hi Tom, pay $0.0 and text <phone> today"


def test_allow_list_entries_are_read_as_text_and_a_line_without_identifier_is_refused(tmp_path):
    assert inv.load_allow_list(DATA / "allow_list.txt") == {"phone:284333112", "email:help@marketplace.example"}
    bad = tmp_path / "allow.txt"
    bad.write_text("DHL\n")
    with pytest.raises(InputError, match="no identifier in"):
        inv.load_allow_list(bad)


# -- the synthetic marketplace --------------------------------------------------------------------
def test_the_synthetic_marketplace_is_what_its_script_writes_and_is_small():
    files = generator().generate()
    assert {name: (DATA / name).read_bytes() for name in files} == files
    assert sum(p.stat().st_size for p in DATA.iterdir() if p.is_file()) < 5e6
    honest = set(TRUTH["honest_accounts"])
    labels = TRUTH["labels"]
    items = [json.loads(line) for d in DUMPS for line in d.read_text().splitlines()]
    assert sum(1 for i in items if i["id"] not in labels) >= 2000
    assert len({i.get("language") for i in items}) >= 6
    assert len(TRUTH["rings"]) >= 3 and len(TRUTH["re_registrations"]) == 2
    assert not honest & {m for r in TRUTH["rings"] for m in r["members"]}


@pytest.fixture(scope="module")
def investigation():
    bans = inv.load_bans(DATA / "bans.csv")
    collector = inv.collect(DUMPS, bans=bans)
    return inv.build(collector, bans, inv.load_allow_list(DATA / "allow_list.txt"))


def group_of(result, account):
    return next((set(g["members"]) for g in result["groups"] if account in g["members"]), set())


def test_every_planted_ring_is_one_group_with_nobody_else_in_it(investigation):
    for ring in TRUTH["rings"]:
        assert group_of(investigation, ring["members"][0]) == set(ring["members"]), ring["name"]
        group = next(g for g in investigation["groups"] if ring["members"][0] in g["members"])
        assert ring["identifier"] in [i["identifier"] for i in group["identifiers"]]


def test_both_re_registrations_after_a_ban_are_caught(investigation):
    for reg in TRUTH["re_registrations"]:
        group = next(g for g in investigation["groups"] if reg["account"] in g["members"])
        assert set(group["members"]) == {reg["banned"], reg["account"]}
        assert [(r["banned"], r["account"]) for r in group["re_registrations"]] == [(reg["banned"], reg["account"])]
        assert group["accounts"][reg["banned"]]["banned"]["source"] == "ban list"
    top = investigation["groups"][:2]  # a ban outweighs anything else in the rank
    assert {g["members"][0] for g in top} | {g["members"][1] for g in top} >= {r["account"] for r in TRUTH["re_registrations"]}


def test_no_honest_account_is_linked_to_anyone(investigation):
    honest = set(TRUTH["honest_accounts"])
    linked = {m for g in investigation["groups"] for m in g["members"]}
    assert not linked & honest
    assert investigation["stats"]["allow-listed identifiers"] == 2  # the DHL hotline and the support address


def test_without_the_allow_list_the_support_address_links_honest_shops_and_the_hotline_is_common():
    """Why the allow-list is there: four honest shops quote the platform's support address."""
    result = inv.build(inv.collect(DUMPS), [])
    support = next(x for x in TRUTH["honest_lookalikes"] if "support" in x["shared"])
    assert group_of(result, support["accounts"][0]) == set(support["accounts"])
    common = {c["identifier"]: c["accounts"] for c in result["common_identifiers"]}
    assert common["phone:284333112"] > 25  # the DHL hotline: too many accounts to be anyone's


def test_evidence_names_the_item_the_normalised_identifier_and_the_raw_text(investigation):
    group = next(g for g in investigation["groups"] if "merchant:mobile_bargain_hub" in g["members"])
    evidence = [e for i in group["identifiers"] for e in i["evidence"] if e["account"] == "merchant:mobile_bargain_hub"]
    assert evidence and all(e["raw"] == "zero seven nine one one one two three four five six" and e["hidden"]
                            for e in evidence)
    item = next(json.loads(line) for d in DUMPS for line in d.read_text().splitlines()
                if json.loads(line)["id"] == evidence[0]["item"])
    assert evidence[0]["raw"] in item["description"] and f"[{evidence[0]['raw']}]" in evidence[0]["context"]


@pytest.fixture(scope="module")
def synthetic_runs(tmp_path_factory):
    return generator().synthetic_runs(tmp_path_factory.mktemp("runs"))


def test_with_run_files_flags_are_counted_and_the_scam_campaign_joins_no_ring(synthetic_runs):
    bans = inv.load_bans(DATA / "bans.csv")
    result = inv.build(inv.collect(DUMPS, synthetic_runs, bans=bans), bans, inv.load_allow_list(DATA / "allow_list.txt"))
    ring = TRUTH["rings"][0]
    group = next(g for g in result["groups"] if ring["members"][0] in g["members"])
    assert set(group["members"]) == set(ring["members"])
    assert all(group["accounts"][m]["flagged"] for m in ring["members"])
    assert set(group["accounts"][ring["members"][0]]["policies"]) <= set(ring["labels"])
    campaign = set(TRUTH["template"]["accounts"])
    honest = set(TRUTH["honest_accounts"])
    for g in result["groups"]:
        members = set(g["members"])
        assert not members & honest, g["id"]
        assert members <= campaign or not members & campaign, g["id"]  # the campaign never joins a ring
    assert any(set(g["members"]) <= campaign for g in result["groups"])  # flagged copies of the script link


def test_a_merchant_offboarded_in_the_ledger_counts_as_banned(tmp_path):
    from moderation.merchants.store import MerchantStore
    from moderation.review.store import Store

    db = str(tmp_path / "ledger.sqlite")
    MerchantStore(Store(db, create=True)).save_health(
        {"pill_express": {"merchant": "pill_express", "tier": "suspended", "points_tier": "suspended", "points": 30.0}}, datetime.now(UTC), "v", "t")
    bans = inv.ledger_bans(db, "suspended")
    result = inv.build(inv.collect(DUMPS[:5], bans=bans), bans)
    group = next(g for g in result["groups"] if "merchant:pharma_direct_24" in g["members"])
    assert group["re_registrations"][0]["banned"] == "merchant:pill_express"
    assert group["accounts"]["merchant:pill_express"]["banned"]["source"] == "merchants ledger"


def test_an_unknown_account_is_refused_with_the_nearest_names(investigation):
    with pytest.raises(InputError, match="merchant:gadget_outlet_uk"):
        inv.find_group(investigation, "gadget_outlet")
    assert inv.find_group(investigation, "gadget_outlet_uk")["members"][0] == "merchant:cheap_phones_4u"
    honest = TRUTH["honest_accounts"][0]
    assert inv.find_group(investigation, honest) is None  # known, linked to nobody


def test_bad_inputs_are_refused_with_what_is_wrong(tmp_path):
    from moderation.policy import load_policy

    with pytest.raises(InputError, match="input file not found"):
        inv.collect([tmp_path / "missing.jsonl"])
    with pytest.raises(ConfigError, match="one run file per dump"):
        inv.collect(DUMPS[:2], [DUMPS[0]])
    with pytest.raises(InputError, match="ban list not found"):
        inv.load_bans(tmp_path / "bans.csv")
    other = load_policy(ROOT / "prompts" / "examples" / "local-services.yaml")
    run = generator().synthetic_run(DUMPS[0], tmp_path / "day-1.jsonl", 1)
    with pytest.raises(ConfigError, match="another taxonomy"):
        inv.collect(DUMPS[:1], [run], policy=other)
    with pytest.raises(InputError, match="is that the run of this dump"):
        inv.collect(DUMPS[1:2], [run])
    with pytest.raises(ConfigError, match="near_duplicates"):
        inv.InvestigateSettings(near_duplicates="some")


def run_cli(*argv):
    from moderation.investigate_cli import add_investigate_parser, cmd_investigate

    parser = argparse.ArgumentParser(prog="moderation")
    add_investigate_parser(parser.add_subparsers(dest="command"))
    return cmd_investigate(parser.parse_args(["investigate", *argv]))


def test_the_command_ranks_groups_then_shows_one_and_exports_it_as_a_review_queue(tmp_path, capsys, synthetic_runs):
    from moderation.review.store import Store

    inputs = [a for d in DUMPS for a in ("--input", str(d))]
    runs = [a for r in synthetic_runs for a in ("--run", str(r))]
    out = tmp_path / "investigation.json"
    assert run_cli(*inputs, *runs, "--bans", str(DATA / "bans.csv"), "--allow-list", str(DATA / "allow_list.txt"),
                   "-o", str(out), "--no-progress") == 0
    listing = capsys.readouterr().out
    assert "merchant:rk_luxe_replicas" in listing and "banned before" in listing
    db, entries = tmp_path / "review.sqlite", tmp_path / "queue.jsonl"
    assert run_cli("merchant:rk_luxe_replicas", "--from", str(out), *inputs, *runs, "--queue", "rk-group", "--db",
                   str(db), "--queue-file", str(entries), "--no-progress") == 0
    shown = capsys.readouterr().out
    assert "suspected re-registration: merchant:rk_luxe_replicas shares email:replicaking@protonmail.com" in shown
    assert "replicaking(at)protonmail(dot)com" in shown and "counterfeit_ip" in shown
    checks = Store(str(db)).checks("rk-group")
    assert checks and {c.item["seller"] for c in checks} == {"rk_luxe_replicas"}
    assert checks[0].sample["evidence"] and checks[0].model_verdict["decision"] == "remove"
    assert len(entries.read_text().splitlines()) == len(checks)
    with pytest.raises(ConfigError, match="name the ACCOUNT"):
        run_cli("--from", str(out), "--queue", "x")
