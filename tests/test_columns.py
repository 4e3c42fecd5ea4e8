"""Real exports: generic field names, column maps per kind, and text in columns no field reads."""

import json

import pytest
from conftest import read_jsonl, write_jsonl

from moderation.cli import main
from moderation.errors import ConfigError, InputError
from moderation.items import Item, RowError, parse_column_map, read_items

KINDS_IN_EXPORT = ("listing", "merchant", "creator_video", "live_chat")


def mixed_export(n: int = 240) -> list[dict]:
    """A platform export of all four kinds that uses only generic names, `seller` as the owner."""
    rows = []
    for i in range(n):
        kind = KINDS_IN_EXPORT[i % 4]
        row = {"id": f"x{i}", "kind": kind, "seller": f"seller {i % 7}"}
        if kind == "live_chat":
            row["text"] = f"hi all\nis stream {i} live?\nget free followers at spam.example"
        else:
            row["title"] = f"Oak chair {i}" if kind == "listing" else f"Shop or video {i}"
            row["description"] = "Solid wood, lightly used."
        if kind == "creator_video":
            row["text"] = "Today I show you how I restore furniture."
        rows.append(row)
    return rows


def items_of(path, **kwargs) -> list:
    return [row for _, row in read_items(path, **kwargs)]


def test_every_kind_reads_the_generic_text_fields(tmp_path):
    path = write_jsonl(tmp_path / "export.jsonl", [
        {"id": "l1", "kind": "listing", "title": "Oak chair", "body": "Solid wood.", "content": "Pick-up only."},
        {"id": "m1", "kind": "merchant", "title": "Acme Tools", "description": "We sell hand tools."},
        {"id": "v1", "kind": "creator_video", "title": "Unboxing", "description": "A new drill", "text": "Today we open it."},
        {"id": "c1", "kind": "live_chat", "title": "Friday stream", "text": "alice: hi\n\nbob: where do I pay?\n"},
    ])
    listing, merchant, video, chat = items_of(path)
    assert listing.fields["title"] == "Oak chair" and listing.fields["description"] == "Solid wood.\n\nPick-up only."
    assert merchant.fields["name"] == "Acme Tools" and merchant.fields["about"] == "We sell hand tools."
    assert video.fields["caption"] == "Unboxing\n\nA new drill" and video.fields["transcript"] == "Today we open it."
    assert chat.fields["channel"] == "Friday stream"
    assert chat.fields["messages"] == [{"user": "", "text": "alice: hi"}, {"user": "", "text": "bob: where do I pay?"}]
    assert all(not item.ignored_columns for item in (listing, merchant, video, chat))


def test_a_kinds_own_field_comes_first_and_a_generic_column_is_added_after_it(tmp_path):
    path = write_jsonl(tmp_path / "export.jsonl", [
        {"id": "m1", "kind": "merchant", "name": "Acme", "about": "Tools.", "description": "Ships EU-wide."},
        {"id": "c1", "kind": "live_chat", "messages": [{"user": "a", "text": "hi"}], "text": "[12:01] b: hello"},
    ])
    merchant, chat = items_of(path)
    assert merchant.fields["about"] == "Tools.\n\nShips EU-wide."
    # A generic chat column is text, one message per line, never parsed as JSON ("[12:01]" is not a list).
    assert chat.fields["messages"] == [{"user": "a", "text": "hi"}, {"user": "", "text": "[12:01] b: hello"}]


def test_a_bad_value_in_a_generic_column_names_the_field_and_the_column(tmp_path):
    path = write_jsonl(tmp_path / "export.jsonl", [{"id": "m1", "kind": "merchant", "name": "Acme", "body": {"a": 1}}])
    (error,) = items_of(path)
    assert isinstance(error, RowError) and "field 'about' (column 'body')" in error.reason


def test_a_column_map_per_kind_applies_to_that_kind_only(tmp_path):
    path = write_jsonl(tmp_path / "export.jsonl", [
        {"id": "l1", "kind": "listing", "headline": "Oak chair", "shop_title": "not read for listings"},
        {"id": "m1", "kind": "merchant", "headline": "not read for merchants", "shop_title": "Acme Tools"},
        {"id": "v1", "kind": "creator_video", "caption": "Unboxing", "seller": "Jo"},
    ])
    columns = parse_column_map("title=headline,merchant.name=shop_title,merchant.ignore=headline,creator_video.creator=seller")
    listing, merchant, video = items_of(path, columns=columns)
    assert listing.fields["title"] == "Oak chair" and listing.ignored_columns == ("shop_title",)
    assert merchant.fields["name"] == "Acme Tools" and merchant.ignored_columns == ()
    assert video.fields["creator"] == "Jo"


def test_a_yaml_column_map_holds_one_section_per_kind(tmp_path):
    (tmp_path / "columns.yaml").write_text(
        "id: sku\nmerchant:\n  name: shop_title\n  about: shop_bio\n  ignore: [internal_note]\nlive_chat:\n  messages: log\n")
    columns = parse_column_map(str(tmp_path / "columns.yaml"))
    assert columns == {"id": "sku", "merchant.name": "shop_title", "merchant.about": "shop_bio",
                       "merchant.ignore": ["internal_note"], "live_chat.messages": "log"}
    path = write_jsonl(tmp_path / "export.jsonl", [
        {"sku": "m1", "kind": "merchant", "shop_title": "Acme", "shop_bio": "Tools", "internal_note": "VIP"},
        {"sku": "c1", "kind": "live_chat", "log": "hi\nbye"},
    ])
    merchant, chat = items_of(path, columns=columns)
    assert merchant.fields == {"name": "Acme", "about": "Tools"} and merchant.ignored_columns == ()
    assert [m["text"] for m in chat.fields["messages"]] == ["hi", "bye"]


@pytest.mark.parametrize("spec, message", [
    ("shop.name=x", "unknown kind 'shop'"),
    ("merchant.price=x", r"unknown fields \['merchant.price'\]"),
    ("merchant.kind=x", "cannot depend on the kind"),
    ("title=a,title=b", "names title twice"),
    ("title", "expected field=column"),
])
def test_a_bad_column_map_is_refused_with_the_bad_key(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_column_map(spec)


def test_a_kinds_mapping_is_checked_against_rows_of_that_kind_only(tmp_path):
    listings = [{"id": f"l{i}", "title": "Chair"} for i in range(150)]
    path = write_jsonl(tmp_path / "export.jsonl", [*listings, {"id": "m1", "kind": "merchant", "shop_title": "Acme"}])
    # No merchant in the first 100 rows: its mapping cannot be checked there, so the file is read.
    assert items_of(path, columns=parse_column_map("merchant.name=shop_title"))[-1].fields["name"] == "Acme"
    mistyped = write_jsonl(tmp_path / "mistyped.jsonl", [{"id": "m1", "kind": "merchant", "shop_title": "Acme"}])
    with pytest.raises(InputError, match="merchant.name='shop_titel'"):
        items_of(mistyped, columns=parse_column_map("merchant.name=shop_titel"))


def test_text_in_a_column_no_field_reads_is_named_or_with_strict_columns_an_error(tmp_path):
    path = write_jsonl(tmp_path / "export.jsonl", [
        {"id": "m1", "kind": "merchant", "name": "Acme", "seller": "Jo Bloggs", "created": "2024-05-01", "score": 3},
    ])
    (item,) = items_of(path)
    assert isinstance(item, Item) and item.ignored_columns == ("seller",)  # a date or a number is not text
    (error,) = items_of(path, strict_columns=True)
    assert isinstance(error, RowError) and "['seller']" in error.reason and "merchant.FIELD=COLUMN" in error.reason


def test_a_mixed_export_with_generic_names_gives_verdicts_and_names_the_unread_column(tmp_path, capsys):
    src = write_jsonl(tmp_path / "export.jsonl", mixed_export(240))
    out = tmp_path / "out.jsonl"
    assert main(["run", str(src), "-o", str(out), "--backend", "fake", "--no-progress"]) == 0
    summary = json.loads((tmp_path / "out.jsonl.summary.json").read_text())
    assert summary["rows"] == 240 and summary["verdict_share"] >= 0.99
    assert summary["kinds"] == {kind: 60 for kind in KINDS_IN_EXPORT}
    # `seller` is a listing field; for the other three kinds it is named, not silently dropped.
    assert summary["ignored_columns"] == {"seller": 180}
    assert "180  rows: seller" in capsys.readouterr().out
    chat = next(r for r in read_jsonl(out) if r["kind"] == "live_chat")
    assert chat["ignored_columns"] == ["seller"] and chat["verdict"]["decision"] != "allow"  # the spam line was read


def test_strict_columns_makes_unread_text_an_error_and_a_mapping_clears_it(tmp_path):
    src = write_jsonl(tmp_path / "export.jsonl", mixed_export(8))
    strict = ["--backend", "fake", "--no-progress", "--strict-columns"]
    assert main(["run", str(src), "-o", str(tmp_path / "a.jsonl"), *strict]) == 0
    assert json.loads((tmp_path / "a.jsonl.summary.json").read_text())["errors"] == 6
    mapped = "merchant.contact=seller,creator_video.creator=seller,live_chat.channel=seller"
    assert main(["run", str(src), "-o", str(tmp_path / "b.jsonl"), *strict, "--columns", mapped]) == 0
    summary = json.loads((tmp_path / "b.jsonl.summary.json").read_text())
    assert summary["errors"] == 0 and summary["ignored_columns"] == {}
    video = next(r for r in read_jsonl(tmp_path / "b.jsonl") if r["kind"] == "creator_video")
    assert "ignored_columns" not in video
