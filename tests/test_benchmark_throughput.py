import argparse
import importlib.util
import random

from conftest import ROOT


def load():
    spec = importlib.util.spec_from_file_location("benchmark_throughput", ROOT / "scripts" / "benchmark_throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_platform_dump_has_the_asked_size_and_violation_rate_and_is_the_same_every_time():
    bench = load()
    dump = bench.platform_dump(400, 0.05)
    assert len(dump) == 400 and sum(bool(li.gold_violations) for li in dump) == 20
    assert len({li.item.id for li in dump}) == 400
    assert [li.item.id for li in dump] == [li.item.id for li in bench.platform_dump(400, 0.05)]
    assert all(li.source == "marketplace" for li in dump if li.gold_violations)
    assert len({li.source for li in dump if not li.gold_violations}) >= 10  # clean items from every set


def test_even_sample_spreads_over_pools_and_a_small_pool_gives_all_it_has():
    bench = load()
    chosen = bench.even_sample({"a": list(range(3)), "b": list(range(100, 200)), "c": list(range(200, 300))}, 41,
                               random.Random(0))
    assert len(chosen) == len(set(chosen)) == 41
    assert sum(x < 100 for x in chosen) == 3 and abs(sum(100 <= x < 200 for x in chosen) - 19) <= 1


def test_the_batch_runner_pass_counts_tokens_and_generated_verdicts_and_scores_labelled_items():
    bench = load()
    from moderation.evalsets import load_set
    from moderation.factory import build_moderator

    items = load_set("marketplace", "test")[:6]
    moderator = build_moderator(bench.run_args(["--backend", "fake"]))
    records, counts = bench.moderate(moderator, items, chunk=4)
    assert counts["verdicts"] == 6 == len(records) and counts["generated"] == 6  # the fake engine counts no tokens
    shipped = build_moderator(bench.run_args(["--backend", "transformers"]))  # lazy: score first, built, no engine
    assert shipped.score_first and bench.moderate(shipped, items, chunk=4)[1]["generated"] == 0
    assert not shipped.backend.is_started
    figures = bench.accuracy(items, records)
    assert 0 <= figures["macro_f1"] <= 1 and "clean_fpr" in figures
    assert bench.accuracy([bench.Unlabelled(items[0].item)], records) == {}


def test_the_table_has_a_column_per_system_and_a_dash_where_a_figure_does_not_apply():
    bench = load()
    base = {"items": 10, "wall_s": 2.0, "items_per_s": 5.0, "cpu_s_per_1000_items": 300.0, "startup_s": 1.0,
            "prompt_tokens": 1000, "completion_tokens": 200, "generated": 4, "verdicts": 10, "peak_rss_gb": 1.5}
    text = bench.table({"a": {**base, "macro_f1": 0.5, "clean_fpr": 0.1}, "b": {**base, "generated": 0}})
    lines = text.splitlines()
    assert lines[0] == "| | a | b |" and len(lines) == 2 + len(bench.ROWS)
    assert "| generated tokens per generated verdict | 50.0 | – |" in lines and "| macro-F1 | 0.500 | – |" in lines


def test_unknown_systems_are_refused_by_name():
    bench = load()
    args = argparse.Namespace(systems="score first,fastest", inputs="demo", full_on_platform=False, sweep=False)
    try:
        bench.measure(args)
    except SystemExit as exc:
        assert "fastest" in str(exc)
    else:
        raise AssertionError("an unknown system was accepted")


def test_full_generation_skips_the_platform_dump_unless_asked():
    bench = load()
    args = argparse.Namespace(inputs="demo,marketplace,platform", full_on_platform=False)
    assert bench.worker_inputs(args, "full generation") == "demo,marketplace"
    assert bench.worker_inputs(args, "score first") == "demo,marketplace,platform"
    args.full_on_platform = True
    assert bench.worker_inputs(args, "full generation") == "demo,marketplace,platform"


def test_saved_figures_render_again_as_the_same_tables():
    bench = load()
    result = {"items": 10, "wall_s": 2.0, "items_per_s": 5.0, "cpu_s_per_1000_items": 300.0, "startup_s": 1.0,
              "prompt_tokens": 1000, "completion_tokens": 200, "generated": 4, "verdicts": 10, "peak_rss_gb": 1.5}
    systems = {"mode": "systems", "setup": "here", "results": {"a": {"demo": result}, "b": {"demo": result, "platform": result}}}
    text = bench.render(systems)
    assert text.startswith("here") and "### demo" in text and "### platform" in text and "| | a | b |" in text and "| | b |" in text
    sweep = bench.render({**systems, "mode": "sweep"})
    assert "| setting | items/s |" in sweep and "| a | 5.00 | 300 | 50.0 | 1.50 | 1 |" in sweep


def test_without_native_bfloat16_the_sweep_runs_float32_only_with_one_change_each():
    bench = load()
    assert bench.sweep_settings(True) == bench.SWEEP
    settings = bench.sweep_settings(False)
    labels = [label for label, _, _ in settings]
    assert len(labels) == len(set(labels)) and not any("bfloat16" in flags for _, _, flags in settings)
    assert ("+ block size 32", {}, ["--dtype", "float32", "--kv-cache-gib", "2", "--block-size", "32"]) in settings
    assert "float32, KV cache 0.5 of RAM" in labels and "float32, KV cache 2 GiB (again: the noise)" in labels
