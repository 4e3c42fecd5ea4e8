import json
import re
import subprocess
import sys

import pytest
from conftest import ROOT, listing, read_jsonl, write_jsonl

from moderation.cli import COMMANDS, build_parser, main

README = (ROOT / "README.md").read_text()


def subcommands():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    names = []
    for name, p in sub.choices.items():
        nested = [a for a in p._actions if getattr(a, "choices", None) and a.dest.endswith("command")]
        if not nested or not nested[0].required:  # `eval` runs on its own as well as `eval compare`
            names.append(name)
        names += [f"{name} {n}" for n in nested[0].choices] if nested else []
    return names


@pytest.mark.parametrize("command", subcommands())
def test_every_subcommand_has_help_and_is_in_the_readme(command, capsys):
    with pytest.raises(SystemExit) as info:
        main(command.split() + ["--help"])
    assert info.value.code == 0 and "usage" in capsys.readouterr().out
    assert f"moderation {command}" in README


def test_readme_holds_exactly_two_setup_commands():
    block = re.search(r"## Quick start\n.*?```(?:bash)?\n(.*?)```", README, re.S).group(1)
    commands = [line for line in block.splitlines() if line.strip() and not line.startswith("#")]
    assert commands == ["scripts/demo", "scripts/test"]
    assert "scripts/test" in (ROOT / ".ci" / "run").read_text()


def test_run_with_fake_backend_end_to_end(tmp_path, capsys):
    src = write_jsonl(tmp_path / "in.jsonl", [listing(1), {"id": "x", "title": "AAA replica bag, WhatsApp me"}, {"no": "id"}])
    out = tmp_path / "out.jsonl"
    assert main(["run", str(src), "-o", str(out), "--backend", "fake", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "3 rows, 2 verdicts, 1 errors" in printed and "counterfeit_ip" in printed
    assert len(read_jsonl(out)) == 3
    summary = json.loads((tmp_path / "out.jsonl.summary.json").read_text())
    assert summary["decisions"] == {"allow": 1, "remove": 1} and summary["this_run"]["processed"] == 3
    assert main(["summary", str(out)]) == 0


def test_run_csv_with_column_mapping(tmp_path):
    src = tmp_path / "in.csv"
    src.write_text("sku,name,body\n1,Lamp,Nice lamp\n2,Watch,Rolex replica\n")
    out = tmp_path / "out.jsonl"
    code = main(["run", str(src), "-o", str(out), "--backend", "fake", "--no-progress", "--columns", "id=sku,title=name,description=body"])
    assert code == 0
    assert [r["verdict"]["decision"] for r in read_jsonl(out)] == ["allow", "remove"]


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "not found"),
        (b"", "empty"),
        (bytes(range(256)) * 50, "binary"),
    ],
)
def test_bad_input_files_give_a_message_and_exit_2_without_traceback(tmp_path, content, message):
    src = tmp_path / "in.jsonl"
    if content is not None:
        src.write_bytes(content)
    proc = subprocess.run(
        [sys.executable, "-m", "moderation.cli", "run", str(src), "-o", str(tmp_path / "o.jsonl"), "--backend", "fake"],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_one_nul_byte_in_a_small_file_is_one_error_record_and_the_run_finishes(tmp_path, fmt):
    """The issue-30 probe: 17 rows, one raw NUL in one of them, well inside the first 64 KB."""
    rows = [listing(i) for i in range(17)]
    if fmt == "jsonl":
        lines = [json.dumps(r).encode() for r in rows]
    else:
        lines = [b"id,title,description"] + [f"{r['id']},{r['title']},{r['description']}".encode() for r in rows]
    lines[5] = lines[5].replace(b"number", b"num\x00ber")
    src, out = tmp_path / f"in.{fmt}", tmp_path / "out.jsonl"
    src.write_bytes(b"\n".join(lines) + b"\n")
    assert main(["run", str(src), "-o", str(out), "--backend", "fake", "--no-progress"]) == 0
    records = read_jsonl(out)
    errors = [r for r in records if r.get("verdict") is None]
    assert len(records) == 17 and len(errors) == 1 and "NUL" in errors[0]["error"]["reason"]


def test_a_jsonl_file_with_a_byte_order_mark_and_crlf_loses_no_row(tmp_path):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_bytes(b"\xef\xbb\xbf" + b"".join(json.dumps(listing(i)).encode() + b"\r\n" for i in range(3)))
    assert main(["run", str(src), "-o", str(out), "--backend", "fake", "--no-progress"]) == 0
    assert [(r["id"], r.get("verdict") is not None) for r in read_jsonl(out)] == [(f"it-{i:04d}", True) for i in range(3)]


def test_unknown_backend_and_bad_options_exit_2(tmp_path, capsys):
    src = write_jsonl(tmp_path / "in.jsonl", [listing(1)])
    assert main(["run", str(src), "-o", str(tmp_path / "o.jsonl"), "--backend", "nope"]) == 2
    assert "unknown backend" in capsys.readouterr().err
    assert main(["run", str(src), "-o", str(tmp_path / "o.jsonl"), "--backend", "fake", "--chunk-size", "0"]) == 2


def test_error_budget_exit_code(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [{"title": f"no id {i}"} for i in range(150)])
    assert main(["run", str(src), "-o", str(tmp_path / "o.jsonl"), "--backend", "fake", "--no-progress", "--chunk-size", "10"]) == 3


def test_commands_table_matches_parser():
    assert set(COMMANDS) == {c.split()[0] for c in subcommands()}


def test_importing_the_package_loads_no_heavy_library():
    code = (
        "import sys, moderation, moderation.cli, moderation.batch, moderation.backends, moderation.backends.fake;"
        "heavy = [m for m in ('torch', 'vllm', 'transformers', 'pyarrow') if m in sys.modules];"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_messy_dump_gives_an_error_record_per_bad_row(tmp_path):
    src = tmp_path / "messy.csv"
    src.write_bytes(
        b"id,title,description,price\n"
        b"1,Lamp,Fine lamp,12\n"
        b",No id,text,3\n"
        b"3,Chair,Wooden chair,abc\n"
        b"4,Huge," + b"x" * 2_000_000 + b",5\n"
        b"5,Bin,\xff\xfe\x80garbage,6\n"
        b'6,"Broken,quote,4\n'
        b"7,Desk,Oak desk,8\n"
    )
    out = tmp_path / "out.jsonl"
    assert main(["run", str(src), "-o", str(out), "--backend", "fake", "--no-progress"]) == 0
    records = read_jsonl(out)
    assert "verdict" in records[0]
    reasons = [r["error"]["reason"] for r in records[1:]]
    assert len(records) == 6 and all(reasons)
    assert "no id" in reasons[0] and "price" in reasons[1] and "limit" in reasons[2]
    assert "UTF-8" in reasons[3] and "broken quoting" in reasons[4] and "lines 7-8" in reasons[4]


def test_a_json_array_given_as_jsonl_exits_3_with_a_hint(tmp_path, capsys):
    src = tmp_path / "listings.jsonl"
    src.write_text(json.dumps([listing(1), listing(2), listing(3)], indent=2))  # a JSON array, not one object a line
    code = main(["run", str(src), "-o", str(tmp_path / "o.jsonl"), "--backend", "fake", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 3
    assert "every row" in err and "looks like a JSON array" in err


def test_a_small_file_with_some_good_rows_still_exits_0(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [listing(1), {"no": "id"}, {"no": "id"}])
    assert main(["run", str(src), "-o", str(tmp_path / "o.jsonl"), "--backend", "fake", "--no-progress"]) == 0


def test_a_column_mapping_naming_a_missing_column_is_refused(tmp_path, capsys):
    csv_src = tmp_path / "in.csv"
    csv_src.write_text("sku,name\n1,Lamp\n")
    code = main(["run", str(csv_src), "-o", str(tmp_path / "a.jsonl"), "--backend", "fake", "--no-progress",
                 "--columns", "id=sku,title=nme"])
    assert code == 2 and "'nme'" in capsys.readouterr().err
    jsonl_src = write_jsonl(tmp_path / "in.jsonl", [{"sku": "1", "name": "Lamp"}, {"sku": "2", "name": "Chair"}])
    code = main(["run", str(jsonl_src), "-o", str(tmp_path / "b.jsonl"), "--backend", "fake", "--no-progress",
                 "--columns", "id=sku,title=nme"])
    assert code == 2 and "'nme'" in capsys.readouterr().err
    assert not (tmp_path / "a.jsonl").exists() and not (tmp_path / "b.jsonl").exists()


def test_a_nightly_job_reusing_one_output_on_a_new_dump_is_refused_until_restart(tmp_path, capsys):
    out = str(tmp_path / "out.jsonl")
    day1 = write_jsonl(tmp_path / "day1.jsonl", [{"id": "l1", "title": "Oak table"}, {"id": "l2", "title": "Lamp"}])
    assert main(["run", str(day1), "-o", out, "--backend", "fake", "--no-progress"]) == 0
    day2 = write_jsonl(tmp_path / "day2.jsonl", [{"id": "l1", "title": "AAA replica Rolex, WhatsApp me"},
                                                 {"id": "l3", "title": "Chair"}])
    capsys.readouterr()
    assert main(["run", str(day2), "-o", out, "--backend", "fake", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "day1.jsonl" in err and "day2.jsonl" in err and "--restart" in err
    assert [r["id"] for r in read_jsonl(out)] == ["l1", "l2"]  # untouched
    assert main(["run", str(day1), "-o", out, "--backend", "fake", "--no-progress", "--no-scores"]) == 2
    assert "records.scores" in capsys.readouterr().err
    assert main(["run", str(day2), "-o", out, "--backend", "fake", "--no-progress", "--restart"]) == 0
    records = read_jsonl(out)
    assert [r["id"] for r in records] == ["l1", "l3"] and records[0]["verdict"]["decision"] == "remove"
