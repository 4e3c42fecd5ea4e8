"""The pure parts of scripts/benchmark_model.py and the Markdown splice the benchmark scripts share."""

import importlib.util

import numpy as np
from conftest import ROOT

from moderation.report import splice_markdown


def load_script():
    spec = importlib.util.spec_from_file_location("benchmark_model", ROOT / "scripts" / "benchmark_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cap_clean_fpr_raises_the_noisiest_policy_until_few_clean_items_are_flagged():
    bm = load_script()
    scores = np.array([[0.9, 0.1], [0.3, 0.1], [0.35, 0.1], [0.4, 0.6], [0.1, 0.1]])
    gold = np.array([[1, 0], [0, 0], [0, 0], [0, 0], [0, 0]], dtype=bool)
    thresholds = bm.cap_clean_fpr(np.array([0.2, 0.5]), scores, gold, max_fpr=0.25)
    assert ((scores[~gold.any(1)] >= thresholds).any(1).mean()) <= 0.25
    # policy 0 made most false flags, so it alone rose (to the first grid step clearing two of them)
    assert abs(thresholds[0] - 0.36) < 1e-9 and thresholds[1] == 0.5
    assert (scores[0] >= thresholds).any()  # the violating item is still caught
    same = bm.cap_clean_fpr(np.array([0.95, 0.95]), scores, gold, max_fpr=0.0)
    assert list(same) == [0.95, 0.95]


def test_splice_markdown_replaces_only_the_marked_block(tmp_path):
    doc = tmp_path / "card.md"
    doc.write_text("# Card\n\nintro\n\n<!-- x:start -->\nold\n<!-- x:end -->\n\n## After\n")
    splice_markdown(doc, "<!-- x:start -->\nnew\n<!-- x:end -->", "<!-- x:start -->", "<!-- x:end -->")
    assert doc.read_text() == "# Card\n\nintro\n\n<!-- x:start -->\nnew\n<!-- x:end -->\n\n## After\n"
    other = tmp_path / "other.md"
    other.write_text("# Other\n")
    splice_markdown(other, "<!-- x:start -->\nb\n<!-- x:end -->", "<!-- x:start -->", "<!-- x:end -->")
    assert other.read_text().endswith("<!-- x:start -->\nb\n<!-- x:end -->\n")
