import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import listing, write_jsonl

from moderation.errors import ConfigError, InputError
from moderation.items import Item, ReadLimits, RowError, parse_column_map, read_items


def rows_of(path, **kwargs):
    return list(read_items(path, **kwargs))


def test_jsonl_reads_all_four_kinds(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [
        listing(1, currency="EUR", attributes={"brand": "Acme", "weight_kg": 2}),
        {"id": "m1", "kind": "merchant", "name": "Acme Shop", "about": "We sell tools.", "categories": ["tools"]},
        {"id": "v1", "kind": "creator_video", "caption": "Unboxing", "transcript": "Today we open a box."},
        {"id": "c1", "kind": "live_chat", "messages": [{"user": "a", "text": "hi"}, "plain line"]},
    ])
    rows = rows_of(path)
    assert [line for line, _ in rows] == [1, 2, 3, 4]
    items = [row for _, row in rows]
    assert all(isinstance(r, Item) for r in items)
    assert [i.kind for i in items] == ["listing", "merchant", "creator_video", "live_chat"]
    assert items[0].fields["price"] == 11.0 and items[0].fields["attributes"]["brand"] == "Acme"
    assert items[3].fields["messages"][1] == {"user": "", "text": "plain line"}


def test_bad_jsonl_rows_become_errors_with_line_numbers(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(
        json.dumps(listing(1)).encode() + b"\n"
        + b'{"title": "no id"}\n'
        + b"{not json\n"
        + b"\xff\xfe\xfa garbage \x80\n"
        + json.dumps({"id": "p", "title": "x", "price": "cheap"}).encode() + b"\n"
        + json.dumps({"id": "big", "title": "x", "description": "y" * 30_000}).encode() + b"\n"
        + b"[1, 2]\n"
        + json.dumps({"id": "k", "kind": "spaceship", "title": "x"}).encode() + b"\n"
    )
    rows = rows_of(path)
    assert isinstance(rows[0][1], Item)
    errors = {line: row.reason for line, row in rows if isinstance(row, RowError)}
    assert errors.keys() == {2, 3, 4, 5, 6, 7, 8}
    assert "no id" in errors[2]
    assert "not valid JSON" in errors[3]
    assert "UTF-8" in errors[4]
    assert "price" in errors[5] and "number" in errors[5]
    assert "over the 20000 limit" in errors[6]
    assert "not an object" in errors[7]
    assert "unknown kind" in errors[8]


def test_ten_megabyte_row_is_an_error_not_a_crash(tmp_path):
    path = write_jsonl(tmp_path / "huge.jsonl", [{"id": "huge", "title": "x", "description": "z" * 10_000_000}, listing(2)])
    rows = rows_of(path)
    assert isinstance(rows[0][1], RowError) and "byte limit" in rows[0][1].reason
    assert isinstance(rows[1][1], Item)


def test_csv_with_broken_quoting_reports_the_lines(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text(
        'id,title,description,price\n'
        '1,Lamp,"A lamp, with a shade",12\n'
        '2,"Broken quote,desc,5\n'
        '3,Chair,Wooden,30\n'
        '4,Table,"Multi-line\ndescription",40\n'
    )
    rows = rows_of(path)
    by_line = {line: row for line, row in rows}
    assert isinstance(by_line[2], Item) and by_line[2].fields["description"] == "A lamp, with a shade"
    broken = [row for row in by_line.values() if isinstance(row, RowError)]
    assert broken and "broken quoting" in broken[0].reason and broken[0].line == 3


def test_csv_multiline_field_and_json_cells(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text(
        'id,kind,messages,description\n'
        'c1,live_chat,"[{""user"": ""a"", ""text"": ""hi""}]",\n'
        'l1,listing,,"two\nlines"\n'
    )
    [(line, chat), (line2, item)] = rows_of(path)
    assert line == 2 and chat.fields["messages"][0]["text"] == "hi"
    assert line2 == 3 and item.fields["description"] == "two\nlines"


def test_parquet_streams_and_maps_columns(tmp_path):
    table = pa.table({"sku": ["a", "b", None], "name": ["Kettle", "Toaster", "Lost"], "cost": [20.0, 30.0, 1.0]})
    path = tmp_path / "d.parquet"
    pq.write_table(table, path)
    rows = rows_of(path, columns=parse_column_map("id=sku,title=name,price=cost"))
    assert [r.fields["title"] for _, r in rows[:2]] == ["Kettle", "Toaster"]
    assert isinstance(rows[2][1], RowError) and rows[2][0] == 3


def test_gzip_jsonl(tmp_path):
    path = tmp_path / "d.jsonl.gz"
    with gzip.open(path, "wt") as fh:
        fh.write(json.dumps(listing(1)) + "\n")
    assert isinstance(rows_of(path)[0][1], Item)


def test_whole_file_problems_raise_input_error(tmp_path):
    with pytest.raises(InputError, match="not found"):
        rows_of(tmp_path / "missing.jsonl")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(InputError, match="empty"):
        rows_of(tmp_path / "empty.jsonl")
    (tmp_path / "bin.jsonl").write_bytes(bytes(range(256)) * 100)
    with pytest.raises(InputError, match="binary"):
        rows_of(tmp_path / "bin.jsonl")
    (tmp_path / "fake.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(InputError, match="Parquet"):
        rows_of(tmp_path / "fake.parquet")
    with pytest.raises(InputError, match="format"):
        rows_of(tmp_path / "d.txt")


def test_column_map_rejects_unknown_fields(tmp_path):
    with pytest.raises(ConfigError, match="unknown fields"):
        parse_column_map("titel=name")
    with pytest.raises(ConfigError, match="field=column"):
        parse_column_map("title")
    spec = tmp_path / "map.yaml"
    spec.write_text("title: name\nid: sku\n")
    assert parse_column_map(str(spec)) == {"title": "name", "id": "sku"}


def test_content_sha_ignores_id_and_limits_validate():
    a = Item("a", "listing", {"title": "x"})
    b = Item("b", "listing", {"title": "x"})
    assert a.content_sha == b.content_sha != Item("c", "listing", {"title": "y"}).content_sha
    with pytest.raises(ConfigError, match="max_text_chars"):
        ReadLimits(max_text_chars=0)


def nested(depth: int) -> str:
    """JSON text of `depth` objects, one inside the other."""
    return '{"a": ' * depth + "1" + "}" * depth


def test_hostile_rows_are_error_records_and_the_rows_after_them_are_read(tmp_path):
    path = tmp_path / "hostile.jsonl"
    path.write_text(
        json.dumps(listing(1)) + "\n"
        + '{"id": "deep", "title": "x", "attributes": ' + nested(5000) + "}\n"  # 30 KB, RecursionError in json
        + '{"id": "deepish", "title": "x", "attributes": ' + nested(200) + "}\n"  # parses, but past the depth limit
        + '{"id": "wide-price", "title": "x", "price": ' + "9" * 400 + "}\n"  # too large for a float
        + '{"id": "long-int", "title": "x", "price": ' + "9" * 5000 + "}\n"  # over Python's int digits limit
        + '{"id": "many-keys", "title": "x", "attributes": {' + ", ".join(f'"k{i}": ""' for i in range(5000)) + "}}\n"
        + json.dumps(listing(7)) + "\n"
    )
    rows = rows_of(path)
    assert [line for line, _ in rows] == [1, 2, 3, 4, 5, 6, 7]
    assert isinstance(rows[0][1], Item) and isinstance(rows[6][1], Item)
    reasons = {line: row.reason for line, row in rows if isinstance(row, RowError)}
    assert "nested" in reasons[2] and "nested" in reasons[3] and "32" in reasons[3]
    assert "price" in reasons[4] and "digits" in reasons[5]
    assert "over the 20000 limit" in reasons[6]


def test_a_deeply_nested_csv_cell_is_an_error_record(tmp_path):
    path = tmp_path / "deep.csv"
    path.write_text('id,title,attributes\n1,Lamp,"' + nested(5000).replace('"', '""') + '"\n2,Chair,\n')
    rows = rows_of(path)
    assert isinstance(rows[0][1], RowError) and "nested" in rows[0][1].reason
    assert isinstance(rows[1][1], Item)


def test_an_item_has_one_record_form_that_review_and_ray_read_back():
    from moderation.distributed import decode_row, encode_row

    item = Item("l1", "listing", {"title": "Oak table", "price": 120.0}, ignored_columns=("internal_note",))
    assert item.record() == {"id": "l1", "kind": "listing", "title": "Oak table", "price": 120.0}
    back = Item.from_record(item.record())
    assert back == item and back.content_sha == item.content_sha and back.ignored_columns == ()
    shipped = decode_row(encode_row(item))
    assert shipped == item and shipped.ignored_columns == ("internal_note",)


# -- byte-order marks, NUL bytes and binary files ------------------------------------------------
BOM = b"\xef\xbb\xbf"


def jsonl_bytes(rows, newline: bytes = b"\n") -> bytes:
    return b"".join(json.dumps(r).encode() + newline for r in rows)


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"], ids=["lf", "crlf"])
@pytest.mark.parametrize("name", ["d.jsonl", "d.jsonl.gz"])
def test_a_jsonl_file_that_starts_with_a_byte_order_mark_keeps_its_first_row(tmp_path, caplog, newline, name):
    """Windows tools write UTF-8 with a BOM; it is stripped (and counted in the log), not an error."""
    data = BOM + jsonl_bytes([listing(i) for i in range(3)], newline)
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    with caplog.at_level("INFO", logger="moderation.items"):
        rows = rows_of(path)
    assert [(line, row.id) for line, row in rows] == [(1, "it-0000"), (2, "it-0001"), (3, "it-0002")]
    assert all(isinstance(row, Item) for _, row in rows)
    assert "byte-order mark" in caplog.text and "1 line" in caplog.text


def test_files_joined_with_their_byte_order_marks_lose_no_row(tmp_path, caplog):
    """`cat a.jsonl b.jsonl` of two such files puts the second BOM at the start of a line."""
    path = tmp_path / "joined.jsonl"
    path.write_bytes(BOM + jsonl_bytes([listing(1)]) + BOM + jsonl_bytes([listing(2)]))
    with caplog.at_level("INFO", logger="moderation.items"):
        assert [row.id for _, row in rows_of(path) if isinstance(row, Item)] == ["it-0001", "it-0002"]
    assert "2 lines" in caplog.text


def seventeen_rows(fmt: str, nul_row: int, pad: int = 0) -> bytes:
    """17 listings as JSONL or CSV (descriptions `pad` characters long), a raw NUL byte in row `nul_row`."""
    rows = [listing(i, description="d" * pad or "A plain household item.") for i in range(17)]
    if fmt == "jsonl":
        lines = [json.dumps(r).encode() for r in rows]
    else:
        lines = [b"id,title,description"] + [f"{r['id']},{r['title']},{r['description']}".encode() for r in rows]
        nul_row += 1  # past the header
    lines[nul_row] = lines[nul_row].replace(b"Item number", b"Item\x00number")
    return b"\n".join(lines) + b"\n"


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
@pytest.mark.parametrize("where, pad", [("first 64 KB", 0), ("after 64 KB", 5000)])
def test_a_nul_byte_in_one_row_is_that_rows_error_record_wherever_it_is(tmp_path, fmt, where, pad):
    path = tmp_path / f"d.{fmt}"
    path.write_bytes(seventeen_rows(fmt, nul_row=15, pad=pad))
    rows = rows_of(path)
    errors = [row for _, row in rows if isinstance(row, RowError)]
    assert len(rows) == 17 and len(errors) == 1 and "NUL" in errors[0].reason
    assert sum(isinstance(row, Item) for _, row in rows) == 16


def test_a_block_of_zeros_left_by_a_crash_is_one_error_record(tmp_path):
    """A file system can leave a run of NUL bytes where a crash cut a write short."""
    path = tmp_path / "d.jsonl"
    path.write_bytes(jsonl_bytes([listing(i) for i in range(3)]) + b"\x00" * 8192 + b"\n" + jsonl_bytes([listing(9)]))
    rows = rows_of(path)
    assert [type(row).__name__ for _, row in rows] == ["Item", "Item", "Item", "RowError", "Item"]


def test_a_nul_character_in_text_is_an_error_record_whatever_the_format(tmp_path):
    """An escaped \\u0000 in JSON, a NUL in a Parquet string: the same error as a raw NUL byte, with the id."""
    path = tmp_path / "d.jsonl"
    write_jsonl(path, [listing(1, title="Lamp\u0000"), listing(2)])
    (_, bad), (_, good) = rows_of(path)
    assert isinstance(bad, RowError) and bad.id == "it-0001" and "NUL" in bad.reason and isinstance(good, Item)
    pq.write_table(pa.table({"id": ["a", "b"], "title": ["ok", "no\x00pe"]}), tmp_path / "d.parquet")
    kinds = [type(row).__name__ for _, row in rows_of(tmp_path / "d.parquet")]
    assert kinds == ["Item", "RowError"]


def test_a_one_row_file_with_a_nul_is_an_error_record_not_a_binary_file(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(json.dumps(listing(1)).encode().replace(b"Item", b"It\x00em") + b"\n")
    (_, row), = rows_of(path)
    assert isinstance(row, RowError) and "NUL" in row.reason


def utf16_jsonl() -> bytes:
    return "".join(json.dumps(listing(i)) + "\n" for i in range(5)).encode("utf-16")


@pytest.mark.parametrize("content, message", [
    (bytes(range(256)) * 100, "control bytes"),
    (gzip.compress(jsonl_bytes([listing(i) for i in range(200)])), "gzip"),  # a .gz file renamed .jsonl
    (b"PK\x03\x04" + bytes(range(256)) * 4, "ZIP"),  # an .xlsx export
    (b"PAR1" + b"\x00" * 300, "Parquet"),
    (b"SQLite format 3\x00" + b"\x00" * 300, "SQLite"),
    (utf16_jsonl(), "UTF-16"),
    (b"\x00".join(jsonl_bytes([listing(i)]) for i in range(20)), "control bytes"),  # most lines hold NULs
    (b"\x00" * 5000, "nothing but NUL"),  # space set aside, never written
], ids=["random", "gzip", "zip", "parquet", "sqlite", "utf-16", "mostly-nul-lines", "zeros"])
def test_a_binary_file_is_still_refused_and_the_message_says_why(tmp_path, content, message):
    path = tmp_path / "d.jsonl"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        rows_of(path)
    (tmp_path / "d.csv").write_bytes(content)
    with pytest.raises(InputError, match="binary"):
        rows_of(tmp_path / "d.csv")


def test_a_latin_1_file_is_text_whose_rows_with_accents_are_error_records(tmp_path):
    """Bytes that are not UTF-8 do not make a file binary: each such row says what is wrong with it."""
    path = tmp_path / "d.csv"
    path.write_bytes("id,title\n".encode() + b"".join(f"{i},Caf\u00e9 table {i}\n".encode("latin-1") for i in range(9))
                     + b"9,Oak table\n")
    rows = rows_of(path)
    assert [type(row).__name__ for _, row in rows] == ["RowError"] * 9 + ["Item"]
    assert "not valid UTF-8" in rows[0][1].reason
