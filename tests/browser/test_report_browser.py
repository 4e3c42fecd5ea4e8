"""`moderation eval`'s report.html in headless Chromium: settings and summary on top, every set's
plots in its own section, every plot drawn (not blank) with a caption that says what it shows,
and a reason where a plot cannot be drawn."""

import subprocess
import sys
from pathlib import Path

import pytest
from review_services import CHROMIUM_ARGS, chromium_or_skip

ROOT = Path(__file__).resolve().parents[2]

# Per image: its size, and how many distinct colours a 64 x 64 copy of it holds (a blank frame holds 1-2).
IMAGE_FACTS = """() => [...document.querySelectorAll('figure img')].map(img => {
  const c = document.createElement('canvas'); c.width = 64; c.height = 64;
  const g = c.getContext('2d'); g.drawImage(img, 0, 0, 64, 64);
  const px = g.getImageData(0, 0, 64, 64).data, colours = new Set();
  for (let i = 0; i < px.length; i += 4) colours.add(px[i] + ',' + px[i + 1] + ',' + px[i + 2]);
  return {w: img.naturalWidth, h: img.naturalHeight, colours: colours.size,
          caption: img.closest('figure').querySelector('figcaption').innerText,
          series: Number(img.closest('figure').dataset.series),
          section: img.closest('section').id};
})"""


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A report over the marketplace set and a labelled file of clean items only (no PR curve can be drawn)."""
    chromium_or_skip()
    tmp = tmp_path_factory.mktemp("report")
    (tmp / "clean.csv").write_text("id,title,violations,decision\n" + "".join(
        f"c{i},Oak shelf no. {i},,allow\n" for i in range(12)))
    for args in (["--sets", "marketplace", "--sample", "40"], ["--labels", str(tmp / "clean.csv"), "--systems", "rules,llm"]):
        out = tmp / args[1].replace("/", "_")[-20:]
        subprocess.run([sys.executable, "-m", "moderation.cli", "eval", *args, "--backend", "fake", "--bootstrap", "20",
                        "--out-dir", str(out), "--no-progress"], cwd=ROOT, check=True, capture_output=True, text=True)
    return sorted(tmp.glob("*/report.html"))


def open_page(playwright, path):
    browser = playwright.chromium.launch(executable_path=chromium_or_skip(), args=CHROMIUM_ARGS, headless=True)
    page = browser.new_page(viewport={"width": 1500, "height": 900})
    page.goto(path.as_uri())
    return browser, page


def test_eval_report_renders_every_plot_with_a_caption_and_no_empty_frame(report):
    from playwright.sync_api import sync_playwright

    assert len(report) == 2
    with sync_playwright() as p:
        for path in report:
            browser, page = open_page(p, path)
            assert page.locator("section").first.get_attribute("id") == "settings"
            assert page.locator("section").nth(1).get_attribute("id") == "summary"
            for href in page.eval_on_selector_all("nav a", "links => links.map(a => a.getAttribute('href'))"):
                assert page.locator(href).count() == 1, href
            images = page.evaluate(IMAGE_FACTS)
            assert images, path
            for image in images:
                assert image["w"] >= 400 and image["h"] >= 300, image
                assert image["colours"] > 8, f"a blank image: {image['caption']}"
                assert image["series"] > 0, f"an empty frame: {image['caption']}"
                assert len(image["caption"]) > 40 and ".png" not in image["caption"], image["caption"]
                assert image["section"].startswith("set-")  # beside its set's numbers, not in a gallery at the end
            for reason in page.locator("figure.not-drawn figcaption").all_inner_texts():
                assert reason.startswith("Not drawn:") and len(reason) > 40
            browser.close()


def test_a_set_without_violations_explains_its_missing_curve(report):
    from playwright.sync_api import sync_playwright

    clean = next(path for path in report if "clean" in str(path))
    with sync_playwright() as p:
        browser, page = open_page(p, clean)
        assert "none of the 12 test items violates" in page.locator("figure.not-drawn").first.inner_text()
        # A rate over no item is "n/a", never a 0 that reads like a result.
        assert page.locator("td.na").count() > 0
        browser.close()
