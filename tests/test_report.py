"""The eval report people read: counts on rates, F1 = 0 apart from undefined, no empty plots,
readable confusion matrices, settings and summary first."""

import numpy as np
import pytest

from moderation.datasets import LabelledItem
from moderation.evaluate import finish, score_labels
from moderation.items import Item
from moderation.metrics import label_matrix
from moderation.report import markdown
from moderation.report_html import html_page
from moderation.report_plots import confusion_cells, plot_set
from moderation.schema import DEFAULT_POLICY_IDS


def labelled(i, violations=(), decision=None, language="en"):
    item = Item(f"x{i}", "listing", {"title": f"item {i}", "language": language, "region": "EU"})
    return LabelledItem(item, frozenset(violations), "test", "t", "MIT", decision)


def result(system, items, flagged, policy, set_name="shop"):
    scores = label_matrix(flagged, DEFAULT_POLICY_IDS).astype(float)
    labels = score_labels(items, scores, np.full(len(DEFAULT_POLICY_IDS), 0.5), np.ones(len(items), dtype=bool), policy)
    return finish(system, set_name, items, labels, np.full(len(DEFAULT_POLICY_IDS), 0.5), {}, n_boot=20)


@pytest.fixture
def shop(policy):
    items = [labelled(0, ["spam"], "remove"), labelled(1, ["spam"], "remove", "de"), labelled(2, ["counterfeit_ip"], "remove"),
             labelled(3, [], "allow"), labelled(4, [], "allow", "de"), labelled(5, [], "allow")]
    # a flags counterfeit on the wrong item and fraud on a clean one, never spam; b flags spam on both, nothing else.
    a = result("a", items, [set(), set(), set(), {"counterfeit_ip"}, {"fraud_scam"}, set()], policy)
    b = result("b", items, [{"spam"}, {"spam"}, set(), set(), set(), set()], policy)
    return [a, b]


def test_f1_of_zero_and_undefined_read_differently(shop):
    text = markdown(shop)
    # a never flags spam (precision undefined, recall 0, F1 0); b flags no fraud and no item is fraud (all undefined).
    assert "| spam | 2 | n/a / 0.00 / 0.00 | 1.00 / 1.00 / 1.00 |" in text
    assert "| fraud_scam | 0 | 0.00 / n/a / 0.00 | n/a / n/a / n/a |" in text
    assert "n/a = undefined" in text


def test_every_rate_carries_its_counts(shop):
    text = markdown(shop)
    assert "6 test items: 3 violating, 3 clean; 6 with a gold decision." in text
    assert "0.667 [" in text and "(2/3)" in text  # a flags 2 of the 3 clean items
    assert "#### shop by language" in text and "| de | 2 | 1 |" in text


def test_a_set_without_violations_gets_a_reason_instead_of_an_empty_plot(policy, tmp_path):
    items = [labelled(i, [], "allow") for i in range(4)]
    rs = [result("rules", items, [set()] * 3 + [{"spam"}], policy, set_name="clean")]
    figures = plot_set("clean", rs, tmp_path)
    pr = figures[0]
    assert pr.path is None and "none of the 4 test items violates" in pr.caption
    assert not (tmp_path / "pr_clean.png").exists()
    page = html_page(rs, figures, {"date": "today", "sample": None})
    assert "class='not-drawn'" in page and "none of the 4 test items violates" in page


def test_confusion_matrix_numbers_are_white_on_dark_cells_and_dark_on_light(shop):
    cells = confusion_cells(shop[1])
    colours = {value: colour for value, colour in cells}
    assert colours[max(colours)] == "white" and colours[0] != "white"


def test_html_page_puts_settings_and_summary_first_and_each_sets_plots_in_its_section(shop, tmp_path):
    figures = plot_set("shop", shop, tmp_path)
    page = html_page(shop, figures, {"date": "2026-11-30", "command": "moderation eval", "sample": 40, "bootstrap": 20})
    positions = [page.index(s) for s in ("id='settings'", "<nav>", "id='summary'", "id='set-shop'", "data:image/png")]
    assert positions == sorted(positions)
    assert "pr_shop" not in page  # captions say what a plot shows, not its file name
    assert "Precision-recall, all policies pooled" in page and "3 of them violating" in page
    assert all(f.series > 0 for f in figures if f.path is not None)  # no drawn frame is empty
