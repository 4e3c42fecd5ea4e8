import argparse
import importlib.util

from conftest import DEMO, ROOT


def load():
    spec = importlib.util.spec_from_file_location("benchmark_throughput", ROOT / "scripts" / "benchmark_throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_worker_measures_every_figure_and_the_table_shows_them():
    bench = load()
    args = argparse.Namespace(worker="fake", items=6, input=str(DEMO), chunk=4, tf_batch=2, max_tokens=64, scores=True, block_size=None)
    figures = bench.worker(args)
    assert figures["items"] == 6 and figures["valid_share"] == 1.0
    assert figures["items_per_s"] > 0 and figures["peak_rss_gb"] > 0 and figures["cpu_s_per_1000_items"] >= 0
    assert figures["latency_p95_s"] >= figures["latency_p50_s"] > 0
    text = bench.table({"a": figures, "b": figures})
    assert "| items/s |" in text and "| prefix-cache hit rate |" in text and text.count("\n") == 13
