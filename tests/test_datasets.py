"""The public-set loaders: counts against the sets' README, mappings, splits, data directory."""

import gzip
import json
import os
from collections import Counter
from functools import cache
from pathlib import Path

import pytest

from moderation import datasets
from moderation.datasets import PUBLIC_SETS, SPLITS, assign_split, data_dir, load_all, load_public, read_public
from moderation.errors import ConfigError
from moderation.schema import DEFAULT_POLICY_IDS

ROOT = Path(__file__).resolve().parent.parent
# The real sets: a copy named by $MODERATION_DATA_DIR (docs/datasets.md), else ../shared/datasets.
REAL = Path(os.environ.get("MODERATION_DATA_DIR") or ROOT.parent / "shared" / "datasets")
needs_data = pytest.mark.skipif(
    not REAL.is_dir(), reason=f"public data sets not found at {REAL}: see docs/datasets.md to download them"
)

# Transcribed from shared/datasets/README.md, not from the loader, so that each checks the other.
README_ROWS = {
    "openai_moderation": {"all": 1680},
    "toxicchat": {"train": 2801, "test": 2853},
    "ebay_wildlife_listings": {"all": 499},
    "ivory_trade_posts": {"all": 8676},
    "youtube_spam": {"all": 1956},
    "sms_spam": {"all": 5574},
    "sms_smishing": {"all": 5971},
    "deceptive_reviews": {"all": 1600},
    "xstest": {"all": 250},  # the README's 450 less the 200 unsafe prompts we leave out
    "hatecheck": {"all": 3728},
    "davidson_hate": {"all": 24783},
    "conda_game_chat": {"train": 26921, "test": 8974},
}
README_LICENCES = {
    "openai_moderation": "MIT",
    "toxicchat": "ToxicChat is CC BY-NC 4.0",
    "ebay_wildlife_listings": "not stated (research data)",
    "ivory_trade_posts": "research use only, no commercial use",
    "youtube_spam": "CC BY 4.0 (UCI)",
    "sms_spam": "CC BY 4.0 (UCI)",
    "sms_smishing": "not stated",
    "deceptive_reviews": "CC BY-NC-SA 3.0",
    "xstest": "CC BY 4.0",
    "hatecheck": "CC BY 4.0",
    "davidson_hate": "MIT",
    "conda_game_chat": "not stated (research data)",
}
# Positive counts the README states, as policy ids or "tag:<tag>"; (set, split or None).
README_POSITIVES = {
    ("ebay_wildlife_listings", None): {"prohibited_item": 102},
    ("ivory_trade_posts", None): {"prohibited_item": 255},
    ("youtube_spam", None): {"spam": 1005},
    ("sms_spam", None): {"spam": 747},
    ("sms_smishing", None): {"fraud_scam": 638, "spam": 489},
    ("deceptive_reviews", None): {"misleading_claim": 800},
    ("xstest", None): {"tag:overblocking": 250},
    ("toxicchat", "test"): {"hate_harassment": 362, "tag:jailbreak": 91},
}
SPLIT_GROUPS = {"all": set(SPLITS), "train": {"train", "dev"}, "test": {"test"}}


def texts(labelled):
    """The human text of an item (Item.text() also holds the user names and the language)."""
    fields = labelled.item.fields
    if labelled.item.kind == "listing":
        return [fields.get("title", ""), fields.get("description", "")]
    return [m["text"] for m in fields["messages"]]


@cache
def real(name):
    return read_public(name, REAL)


def test_the_registry_matches_the_readme():
    assert set(PUBLIC_SETS) == set(README_ROWS)
    for name, spec in PUBLIC_SETS.items():
        assert spec.name == name
        assert spec.rows == README_ROWS[name]
        assert spec.licence == README_LICENCES[name]


@needs_data
@pytest.mark.parametrize("name", list(README_ROWS))
def test_row_counts_match_the_readme(name):
    items, skipped = real(name)
    for file_split, expected in README_ROWS[name].items():
        group = SPLIT_GROUPS[file_split]
        got = sum(it.split in group for it in items) + sum(s.split in group for s in skipped)
        assert got == expected, f"{name} {file_split}: {got} rows, README says {expected}"


@needs_data
@pytest.mark.parametrize("name,split", list(README_POSITIVES))
def test_positive_counts_match_the_readme(name, split):
    items, _ = real(name)
    counts = Counter()
    for it in items:
        if split is None or it.split == split:
            counts.update(it.gold_violations)
            counts.update(f"tag:{t}" for t in it.tags)
    assert {k: counts[k] for k in README_POSITIVES[name, split]} == README_POSITIVES[name, split]


@needs_data
@pytest.mark.parametrize("name", list(README_ROWS))
def test_records_are_well_formed(name):
    items, skipped = real(name)
    ids = [it.item.id for it in items] + [s.id for s in skipped]
    assert len(ids) == len(set(ids))
    assert all(i.startswith(f"{name}:") for i in ids)
    assert {it.split for it in items} <= set(SPLITS) and "test" in {it.split for it in items}
    kind = "listing" if name == "ebay_wildlife_listings" else "live_chat"
    for it in items:
        assert it.source == name and it.licence == README_LICENCES[name]
        assert it.gold_violations <= set(DEFAULT_POLICY_IDS)
        assert it.item.kind == kind and it.item.language == "en" and any(t.strip() for t in texts(it))
        assert it.gold_decision in (None, "allow")
        assert not (it.gold_decision == "allow" and it.gold_violations)


@needs_data
def test_skipped_rows_are_the_empty_utterances():
    _, skipped = real("conda_game_chat")
    assert len(skipped) == 8 and {s.reason for s in skipped} == {"row has no text"}
    assert sum(s.split == "test" for s in skipped) == 1  # one in CONDA_valid
    assert all(not real(n)[1] for n in PUBLIC_SETS if n != "conda_game_chat")


@needs_data
def test_label_mappings_on_the_real_files():
    hatecheck, _ = real("hatecheck")
    assert Counter(bool(it.gold_violations) for it in hatecheck) == {True: 2563, False: 1165}
    negatives = [it for it in hatecheck if not it.gold_violations]
    assert all(it.gold_decision == "allow" and it.tags == ("overblocking",) for it in negatives)
    davidson, _ = real("davidson_hate")
    assert sum(bool(it.gold_violations) for it in davidson) == 1430
    assert not any(it.gold_violations for it in davidson if "offensive" in it.tags)
    toxic, _ = real("toxicchat")
    assert all(it.gold_violations <= {"hate_harassment"} for it in toxic)
    assert not any(it.gold_decision for it in toxic)


@needs_data
def test_splits_are_deterministic_and_near_their_shares():
    for name in ("youtube_spam", "toxicchat"):
        first = {it.item.id: it.split for it in load_public(name, REAL)}
        assert first == {it.item.id: it.split for it in load_public(name, REAL)}
    shares = Counter(it.split for it in real("davidson_hate")[0])
    total = sum(shares.values())
    for split, share in (("train", 0.60), ("dev", 0.15), ("test", 0.25)):
        assert abs(shares[split] / total - share) < 0.02
    train_file = [it for it in real("toxicchat")[0] if it.split != "test"]
    assert abs(sum(it.split == "dev" for it in train_file) / len(train_file) - 0.20) < 0.03


@needs_data
def test_load_public_filters_by_split():
    test = load_public("xstest", REAL, split="test")
    assert test and {it.split for it in test} == {"test"}
    assert len(test) == sum(it.split == "test" for it in real("xstest")[0])


def test_assign_split_is_pinned():
    # sha256 buckets: sms_spam:0 -> 59, :2 -> 81, :6 -> 68, :9 -> 22, :10 -> 11
    assert [assign_split(f"sms_spam:{i}") for i in (0, 2, 6)] == ["train", "test", "dev"]
    assert [assign_split(f"sms_spam:{i}", "train") for i in (9, 10)] == ["train", "dev"]
    assert assign_split("sms_spam:10", "test") == "test"


# --- data directory ----------------------------------------------------------------------


def test_data_dir_precedence(tmp_path, monkeypatch):
    arg, env, default = (tmp_path / d for d in ("arg", "env", "default"))
    for d in (arg, env, default):
        d.mkdir()
    monkeypatch.setattr(datasets, "DEFAULT_DATA_DIR", default)
    monkeypatch.delenv("MODERATION_DATA_DIR", raising=False)
    assert data_dir(None) == default
    monkeypatch.setenv("MODERATION_DATA_DIR", str(env))
    assert data_dir(None) == env
    assert data_dir(str(arg)) == arg


def test_default_data_dir_is_beside_the_repo():
    assert datasets.DEFAULT_DATA_DIR == ROOT.parent / "shared" / "datasets"


def test_missing_data_dir_is_a_clear_config_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MODERATION_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match=r"MODERATION_DATA_DIR.*nowhere.*docs/datasets.md"):
        data_dir(None)
    with pytest.raises(ConfigError, match="nowhere"):
        load_public("sms_spam")


def test_unknown_set_split_or_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="known sets: openai_moderation, toxicchat"):
        load_public("imdb", tmp_path)
    with pytest.raises(ConfigError, match="unknown split"):
        load_public("sms_spam", tmp_path, split="validation")
    with pytest.raises(ConfigError, match=r"sms_spam.SMSSpamCollection"):
        load_public("sms_spam", tmp_path)
    with pytest.raises(ConfigError):
        load_all(tmp_path)


# --- loaders on small hand-written files ---------------------------------------------------


def write(tmp_path, folder, name, text, encoding="utf-8"):
    (tmp_path / folder).mkdir(exist_ok=True)
    (tmp_path / folder / name).write_bytes(text.encode(encoding))


def test_sms_spam_skips_the_header_and_keeps_quotes(tmp_path):
    write(tmp_path, "sms_spam", "SMSSpamCollection", 'Label\tSMS\nham\thi "there\nspam\tWIN now\nspan\toops\n')
    items, skipped = read_public("sms_spam", tmp_path)
    assert [(it.item.id, texts(it)[0], it.gold_violations) for it in items] == [
        ("sms_spam:0", 'hi "there', frozenset()),
        ("sms_spam:1", "WIN now", frozenset({"spam"})),
    ]
    assert [(s.id, s.reason) for s in skipped] == [("sms_spam:2", "unknown label 'span'")]


def test_smishing_labels_ignore_case_and_keep_only_the_text(tmp_path):
    rows = "label,TEXT,URL,EMAIL,PHONE\nSmishing,Pay here,Yes,No,No\nSPAM,Buy,No,No,No\nham,Hello,No,No,No\n"
    write(tmp_path, "sms_smishing", "Dataset_5971.csv", rows)
    items = load_public("sms_smishing", tmp_path)
    assert [sorted(it.gold_violations) for it in items] == [["fraud_scam"], ["spam"], []]
    assert items[0].item.fields["messages"] == [{"user": "", "text": "Pay here"}]


def test_openai_missing_flags_are_not_labels(tmp_path):
    (tmp_path / "openai_moderation").mkdir()
    rows = [{"prompt": "a", "S3": 1}, {"prompt": "b", "H": 0, "H2": 1, "V2": 1}, {"prompt": "c", "SH": 0}]
    with gzip.open(tmp_path / "openai_moderation" / "samples-1680.jsonl.gz", "wt") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in rows))
    items = load_public("openai_moderation", tmp_path)
    assert [sorted(it.gold_violations) for it in items] == [
        ["adult_sexual"], ["hate_harassment", "violence_graphic"], []
    ]


def test_youtube_drops_junk_rows_and_keeps_repeats_in_one_split(tmp_path):
    header = "COMMENT_ID,AUTHOR,DATE,CONTENT,CLASS\n"
    for name in datasets._YOUTUBE_FILES:
        write(tmp_path, "youtube_spam", name, header)
    long_id = "z" * 30
    rows = f"{long_id},a,,subscribe!,1\n{long_id},a,,subscribe!,1\nshortjunk,b,,Hi,1\n"
    write(tmp_path, "youtube_spam", "Youtube04-Eminem.csv", header + rows)
    items = load_public("youtube_spam", tmp_path)
    assert [it.item.id for it in items] == [f"youtube_spam:{long_id}", f"youtube_spam:{long_id}~2"]
    assert items[0].split == items[1].split and items[0].gold_violations == {"spam"}


def test_ebay_listing_fields(tmp_path):
    header = "id,title,price,currency,seller,location,description,label\n"
    rows = "u1,Shark jaw  | eBay,12.50,USD,bob,Florida,Real jaw,1\nu2,Knife | eBay,,,,,Steel,0\n"
    write(tmp_path, "ebay_wildlife_listings", "validation_sharks.csv", header + rows)
    first, second = load_public("ebay_wildlife_listings", tmp_path)
    assert first.item.kind == "listing" and first.gold_violations == {"prohibited_item"}
    assert first.item.fields == {
        "title": "Shark jaw", "description": "Real jaw", "price": 12.5, "currency": "USD", "seller": "bob",
        "language": "en",
    }
    assert second.item.fields == {"title": "Knife", "description": "Steel", "language": "en"}


def test_ivory_adds_the_profile_as_a_second_message(tmp_path):
    rows = "tweet_id,tweet_text_cleaned,user_description_cleaned,label\n3,Ivory dish,Auctioneers,1\n3,Nice day,,0\n"
    write(tmp_path, "ivory_trade_posts", "share_data.csv", rows)
    first, second = load_public("ivory_trade_posts", tmp_path)
    assert first.item.fields["messages"] == [
        {"user": "", "text": "Ivory dish"}, {"user": "profile", "text": "Auctioneers"}
    ]
    assert second.item.fields["messages"] == [{"user": "", "text": "Nice day"}]
    assert (first.item.id, second.item.id) == ("ivory_trade_posts:0", "ivory_trade_posts:1")


def test_latin1_file_and_empty_text(tmp_path):
    rows = "deceptive,hotel,polarity,source,text\ndeceptive,h,positive,MTurk,Tr\xe8s bien\ntruthful,h,negative,TA, \n"
    write(tmp_path, "deceptive_reviews", "deceptive-opinion.csv", rows, encoding="latin-1")
    items, skipped = read_public("deceptive_reviews", tmp_path)
    assert [texts(it) for it in items] == [["Très bien"]] and items[0].gold_violations == {"misleading_claim"}
    assert [(s.id, s.reason) for s in skipped] == [("deceptive_reviews:1", "row has no text")]
