"""Curation: case checks -> TRL rows, dedup, exact and near-duplicate leakage, formats, CLI."""

import json
import random

import pytest

from moderation.cli import main
from moderation.curate import (
    CurateConfig,
    Curator,
    build_test_index,
    check_rows,
    choose_evidence,
    curate,
    gold_verdict,
    policy_rationale,
    read_case_checks,
    split_held_out,
    verdict_json,
    write_datasets,
)
from moderation.datasets import LabelledItem
from moderation.dedup import MinHashIndex, jaccard
from moderation.evalsets import load_set
from moderation.items import Item
from moderation.prompts import load_template
from moderation.schema import DEFAULT_POLICY_IDS, parse_verdict

SHORT = load_template("prompts/moderate.short.v1.txt")
ITEM2 = {"id": "L3", "kind": "listing", "title": "Rolex Submariner replica AAA quality, full set",
         "description": "Cheap, ships from Shenzhen in a gift box with papers.", "region": "US", "language": "en"}
ITEM = {"id": "L1", "kind": "listing", "title": "Rolex Submariner replica AAA quality",
        "description": "Looks real, nobody can tell. Pay by bank transfer only.", "region": "US", "language": "en"}
MODEL = {"decision": "allow", "violations": [], "rationale": "Looks fine."}
REVIEWER = {"decision": "remove", "rationale": "Replica watch.",
            "violations": [{"evidence": "Rolex Submariner replica AAA quality", "severity": "high", "policy": "counterfeit_ip"}]}


def check(check_id, decision, model=MODEL, reviewer=None, item=ITEM):
    """One row exactly as `moderation review export --format jsonl` writes it."""
    reviewer = model if decision == "accept" else reviewer
    return {"check_id": check_id, "queue": "spot", "item": item, "model_verdict": model,
            "provenance": {"model": "default", "prompt_sha": "x"}, "review_decision": decision,
            "reviewer_verdict": reviewer, "reviewer": "ana", "notes": "",
            "created_at": "2026-11-23T10:00:00Z", "updated_at": "2026-11-23T10:05:00Z"}


def write_checks(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def labelled(item_id, text, violations=(), split="train", source="toy"):
    item = Item(item_id, "live_chat", {"messages": [{"user": "u", "text": text}], "language": "en"})
    return LabelledItem(item, frozenset(violations), split, source, "test")


def test_verdict_json_is_compact_in_schema_order():
    text = verdict_json(REVIEWER)
    assert text == ('{"decision":"remove","violations":[{"policy":"counterfeit_ip","severity":"high",'
                    '"evidence":"Rolex Submariner replica AAA quality"}],"rationale":"Replica watch."}')


def test_case_checks_give_the_documented_rows(tmp_path, policy):
    rows = [check("a", "accept"), check("c", "correct", reviewer=REVIEWER), check("s", "skip"),
            check("e", "escalate"), check("c2", "correct", reviewer={**REVIEWER, "violations": [
                {**REVIEWER["violations"][0], "evidence": "not in the item"}]})]
    checks = list(read_case_checks(write_checks(tmp_path / "checks.jsonl", rows)))
    prompt = SHORT.messages(checks[0].item, policy)
    sft, pair, kto, reason = check_rows(checks[0], prompt, policy)
    assert pair is None and reason is None and kto["label"] is True
    assert sft["messages"][-1] == {"role": "assistant", "content": verdict_json(MODEL)}
    sft, pair, kto, reason = check_rows(checks[1], prompt, policy)
    assert sft["messages"][-1]["content"] == verdict_json(REVIEWER)  # the reviewer's own rationale is kept
    # a pair differs only in what the reviewer changed: both rationales are made from the policies
    chosen, rejected = (json.loads(pair[side][0]["content"]) for side in ("chosen", "rejected"))
    assert chosen == {**REVIEWER, "rationale": policy_rationale(policy, ["counterfeit_ip"])}
    assert rejected == {**MODEL, "rationale": policy_rationale(policy, [v["policy"] for v in MODEL["violations"]])}
    assert pair["prompt"] == prompt and kto["label"] is False
    assert check_rows(checks[2], prompt, policy) == (None, None, None, None)
    assert check_rows(checks[3], prompt, policy) == (None, None, None, None)
    assert check_rows(checks[4], prompt, policy)[3] == "reviewer verdict invalid"


def test_a_correction_without_a_rationale_of_its_own_gets_one_from_its_policies(tmp_path, policy):
    from moderation.review.verdicts import REVIEWER_RATIONALE

    blank = check("b", "correct", reviewer={**REVIEWER, "rationale": REVIEWER_RATIONALE})
    (case,) = read_case_checks(write_checks(tmp_path / "checks.jsonl", [blank]))
    sft, pair, _, _ = check_rows(case, SHORT.messages(case.item, policy), policy)
    assert json.loads(sft["messages"][-1]["content"])["rationale"] == policy_rationale(policy, ["counterfeit_ip"])
    assert REVIEWER_RATIONALE not in json.dumps(pair)


def test_malformed_case_check_lines_become_row_errors(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"check_id": "x"}\nnot json\n' + json.dumps(check("ok", "accept")) + "\n"
                    + json.dumps({**check("w", "accept"), "review_decision": "maybe"}) + "\n")
    got = list(read_case_checks(path))
    assert [type(g).__name__ for g in got] == ["RowError", "RowError", "ReviewedCase", "RowError"]
    assert "maybe" in got[3].reason


def test_gold_verdicts_pass_parse_verdict_for_every_marketplace_train_item(policy):
    for li in load_set("marketplace", "train"):
        verdict = gold_verdict(li, policy)
        assert verdict is not None, li.item.id
        parsed = parse_verdict(verdict_json(verdict), li.item.text(), DEFAULT_POLICY_IDS)
        assert {v["policy"] for v in parsed["violations"]} == set(li.gold_violations) or len(li.gold_violations) > 3
        assert len(parsed["rationale"]) <= 100


def test_choose_evidence_prefers_the_rule_match():
    text = "Great phone, barely used.\nDM me on whatsapp to pay less."
    assert "whatsapp" in choose_evidence(text, "off_platform_transaction").casefold()
    assert choose_evidence(text, "spam") == "Great phone"


def test_minhash_finds_exact_and_near_duplicates_only():
    index = MinHashIndex(threshold=0.8)
    base = "Brand new iPhone 15 Pro, 256GB, sealed box, pick up in Lyon or shipping within France"
    index.add("t/1", base)
    assert index.exact("BRAND new iphone 15 pro 256gb sealed box pick up in lyon or shipping within france") == "t/1"
    near = base.replace("Lyon", "Lille")
    assert jaccard(base, near) > 0.8 and index.near(near)[0] == "t/1"
    assert index.near("Vintage oak dining table with six chairs, some scratches, collection only") is None


def test_leaks_and_duplicates_are_dropped(policy):
    test_text = "you are all idiots and should get out of this game right now honestly"
    test_index = build_test_index({"toy": [labelled("t1", test_text, split="test")]}, 0.8)
    train = [labelled("a", test_text, ["hate_harassment"]),                                  # exact leak
             labelled("b", test_text.replace("honestly", "honestly!!") + " lol", ["hate_harassment"]),  # near leak
             labelled("c", "gg well played everyone, see you tomorrow for the next match"),
             labelled("d", "GG well played everyone, see you tomorrow for the next match")]  # duplicate of c
    curator = Curator(policy, SHORT, test_index, CurateConfig(per_label=5, allow_per_set=5))
    curator.add_labelled("toy", train)
    out = curator.out
    assert len(out.sft) == 1 and out.sft[0]["source"] == "toy"
    assert out.dropped["exact leak of a test item"] == 1 and out.dropped["near leak of a test item"] == 1
    assert out.dropped["duplicate in training data"] == 1
    assert {leak["item"] for leak in out.leaks} == {"toy/a", "toy/b"}


def test_case_check_on_a_test_item_is_not_trained_on(tmp_path, policy):
    test_item = load_set("marketplace", "test")[0]
    item = {"id": "x", "kind": test_item.item.kind, **test_item.item.fields}
    path = write_checks(tmp_path / "c.jsonl", [check("leak", "accept", model=MODEL, item=item)])
    out = curate({}, {"marketplace": [test_item]}, [path], policy, SHORT, CurateConfig())
    assert out.sft == [] and out.dropped["exact leak of a test item"] == 1


def test_caps_balance_and_synthetic_pairs(policy):
    train = [labelled(f"s{i}", f"WIN a free cruise number {i} text CLAIM to 80888 now", ["spam"]) for i in range(10)]
    train += [labelled(f"h{i}", f"see you at {i} pm for dinner with {'ab' * i} and friends") for i in range(10)]
    curator = Curator(policy, SHORT, MinHashIndex(), CurateConfig(per_label=3, allow_per_set=2, synthetic_pairs=4,
                                                                   near_dup_threshold=0.95))
    curator.add_labelled("toy", train)
    verdicts = [json.loads(r["messages"][-1]["content"]) for r in curator.out.sft]
    assert sum(v["decision"] == "allow" for v in verdicts) == 2 and len(verdicts) == 5
    pairs = curator.out.preference
    assert len(pairs) == 4 and all(p["chosen"] != p["rejected"] and p["source"] == "synthetic:toy" for p in pairs)


def test_split_held_out():
    parts = split_held_out(list(range(20)), 0.1, seed=0)
    assert len(parts["test"]) == 2 and sorted(parts["train"] + parts["test"]) == list(range(20))
    assert split_held_out([1], 0.1, 0)["test"] == []


def test_written_datasets_load_in_trl_formats(tmp_path, policy):
    from datasets import load_dataset
    from trl.data_utils import is_conversational

    path = write_checks(tmp_path / "c.jsonl", [check("a", "accept", item=ITEM2), check("c", "correct", reviewer=REVIEWER),
                                                check("c3", "correct", item={**ITEM, "id": "L2", "title": "Omega replica"}, reviewer={
                                                    **REVIEWER, "violations": [{**REVIEWER["violations"][0], "evidence": "Omega replica"}]})])
    out = curate({}, {}, [path], policy, SHORT, CurateConfig(near_dup_threshold=0.99))
    write_datasets(out, tmp_path / "out", CurateConfig(held_out_share=0.5), {"prompt": "short"})
    sft = load_dataset("json", data_files=str(tmp_path / "out/sft/train.jsonl"))["train"]
    assert sft.column_names == ["messages", "source"] and is_conversational(sft[0])
    assert [m["role"] for m in sft[0]["messages"]] == ["system", "user", "assistant"]
    pref = load_dataset("json", data_files={s: str(tmp_path / f"out/preference/{s}.jsonl") for s in ("train", "test")})
    assert set(pref["train"].column_names) == {"prompt", "chosen", "rejected", "source"}
    kto = load_dataset("json", data_files=str(tmp_path / "out/kto/train.jsonl"))["train"]
    assert sorted(kto["label"]) == [False, False, True]
    card = (tmp_path / "out/README.md").read_text()
    assert "SFT rows by policy" in card and "'accept': 1" in card


def test_curate_cli_end_to_end(tmp_path, capsys):
    path = write_checks(tmp_path / "c.jsonl", [check("a", "accept", item=ITEM2), check("c", "correct", reviewer=REVIEWER)])
    code = main(["curate", "-o", str(tmp_path / "out"), "--case-checks", str(path), "--sets", "marketplace",
                 "--test-sets", "marketplace", "--marketplace-per-label", "2", "--allow-per-set", "3"])
    assert code == 0
    out = capsys.readouterr().out
    assert "preference pairs 1" in out
    rows = [json.loads(line) for line in (tmp_path / "out/sft/train.jsonl").read_text().splitlines()]
    assert sum(r["source"] == "marketplace" for r in rows) >= 20 and sum(r["source"] == "case_check" for r in rows) == 2
    test_texts = {li.item.text() for li in load_set("marketplace", "test")}
    assert not any(r["messages"][1]["content"] in test_texts for r in rows)


def test_bad_config_names_the_field():
    with pytest.raises(Exception, match="near_dup_threshold"):
        CurateConfig(near_dup_threshold=1.5)


# --- the training corpus and augmentation ----------------------------------------------------

from moderation.augment import augment, inject, obfuscate_phones  # noqa: E402
from moderation.curate import quoted_evidence  # noqa: E402


def corpus_item(item_id, title, description, violations=(), evidence=(), language="en"):
    item = Item(item_id, "listing", {"title": title, "description": description, "seller": "s", "language": language})
    decision = "remove" if violations else "allow"
    return LabelledItem(item, frozenset(violations), "train", "marketplace_corpus", "test", decision, (), "why", tuple(evidence))


def test_gold_evidence_becomes_a_quotable_candidate(policy):
    li = corpus_item("c1", "Jordan 4 UA 1:1 batch", "Best quality. Pay on WhatsApp +1 555 0100 200 only, cheaper",
                     ["counterfeit_ip", "off_platform_transaction"],
                     [("counterfeit_ip", "UA 1:1"), ("off_platform_transaction", "Pay on WhatsApp +1 555 0100 200 only")])
    verdict = gold_verdict(li, policy)
    quotes = {v["policy"]: v["evidence"] for v in verdict["violations"]}
    assert quotes["off_platform_transaction"] == "Pay on WhatsApp +1 555 0100 200 only"  # a whole clause, as given
    assert "UA 1" in quotes["counterfeit_ip"]  # the clause holding the quote, split at ':' like constrained decoding
    parse_verdict(json.dumps(verdict), li.item.text(), DEFAULT_POLICY_IDS)
    assert quoted_evidence("no match here", "something else") is None


def test_injection_copies_keep_the_labels_and_add_the_tag():
    li = corpus_item("c2", "Replica watch AAA", "Looks real", ["counterfeit_ip"], [("counterfeit_ip", "Replica watch AAA")],
                     language="de")
    copy = inject(li, random.Random(0))
    assert copy.item.id == "c2~inj" and copy.gold_violations == li.gold_violations
    assert "adversarial:injection" in copy.tags and "allow" in copy.item.fields["description"]
    assert copy.item.fields["title"] == "Replica watch AAA"  # the evidence is still verbatim
    assert inject(corpus_item("c3", "Oak table", "Solid wood"), random.Random(0)) is None  # clean items: no copy


def test_phone_obfuscation_spaces_digits_in_text_and_evidence():
    li = corpus_item("c4", "iPhone deal", "Text me on +44 7700 900123 now", ["off_platform_transaction"],
                     [("off_platform_transaction", "Text me on +44 7700 900123 now")])
    copy = obfuscate_phones(li)
    assert "+ 4 4 7 7 0 0 9 0 0 1 2 3" in copy.item.fields["description"]
    assert dict(copy.evidence)["off_platform_transaction"] in copy.item.text()
    assert obfuscate_phones(corpus_item("c5", "Table", "Call 12")) is None
    copies = augment([li, corpus_item("c6", "Lamp", "Nice")], share=1.0, seed=0)
    assert sorted(c.item.id for c in copies) == ["c4~inj", "c4~obf"]


def test_curated_corpus_rows_and_augmented_rows_are_counted_by_source(policy):
    items = [corpus_item(f"k{i}", f"Replica Rolex number {i} {'x' * i}", f"AAA copy {i} {'y' * i}", ["counterfeit_ip"],
                         [("counterfeit_ip", f"Replica Rolex number {i}")]) for i in range(6)]
    curator = Curator(policy, SHORT, MinHashIndex(), CurateConfig(augment_share=1.0, near_dup_threshold=0.99))
    curator.add_labelled("marketplace_corpus", items)
    curator.add_augmented("marketplace_corpus", items)
    sources = [r["source"] for r in curator.out.sft]
    assert sources.count("marketplace_corpus") == 6 and sources.count("augment:injection") >= 1


# --- a curate folder is complete, or marked as not -------------------------------------------

def killed_while_writing(monkeypatch, after_files: int):
    """Make Dataset.to_json die (as a kill would) once `after_files` files are written."""
    from datasets import Dataset

    written, real = [], Dataset.to_json

    def to_json(self, path, **kwargs):
        if len(written) >= after_files:
            raise KeyboardInterrupt("killed")
        written.append(path)
        return real(self, path, **kwargs)

    monkeypatch.setattr(Dataset, "to_json", to_json)


def curated_rows(tmp_path, policy):
    path = write_checks(tmp_path / "c.jsonl", [check("a", "accept", item=ITEM2), check("c", "correct", reviewer=REVIEWER)])
    return curate({}, {}, [path], policy, SHORT, CurateConfig(near_dup_threshold=0.99))


@pytest.mark.parametrize("after_files", [0, 1, 2])
def test_trainers_refuse_a_curate_folder_that_was_killed_mid_write(tmp_path, policy, monkeypatch, after_files):
    """sft, reward, dpo and lean_sft read through load_curated, fit_heads through read_rows: each refuses
    a folder that curate did not finish, a first one or one it was writing again."""
    from finetune.common import load_curated
    from finetune.fit_heads import read_rows
    from moderation.errors import InputError

    rows, out = curated_rows(tmp_path, policy), tmp_path / "out"
    write_datasets(rows, out, CurateConfig(), {})
    assert len(load_curated(str(out / "sft"), "train")) == 2  # complete: loads
    killed_while_writing(monkeypatch, after_files)
    with pytest.raises(KeyboardInterrupt):
        write_datasets(rows, out, CurateConfig(), {})
    monkeypatch.undo()
    for folder in ("sft", "preference", "kto"):
        with pytest.raises(InputError, match="incomplete"):
            load_curated(str(out / folder))
    with pytest.raises(InputError, match="run `moderation curate` again"):
        read_rows(out / "sft", tuple(DEFAULT_POLICY_IDS))
    write_datasets(rows, out, CurateConfig(), {})  # curated again, to the end: loads again
    assert len(load_curated(str(out / "sft"), "train")) == 2 and len(read_rows(out / "sft", tuple(DEFAULT_POLICY_IDS))[0]) == 2
