"""The check page in real headless Chromium: a flagged item's evidence highlighted where it stands in the item's
text, beside each decided policy's score against its threshold and the policy's definition. The screenshot is
checked, not only the DOM: the highlight is drawn in its colour inside the item, and the reasons are drawn."""

import io
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from review_services import CHROMIUM_ARGS, chromium_or_skip, free_port

from moderation.policy import load_policy
from moderation.review.store import Store

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "review-pass-123"
MARK_RGB = (0xFF, 0xE0, 0x66)  # review.css: mark { background: #ffe066 }
ROWS = [
    {"id": "w-1", "kind": "listing", "title": "Steel diver watch, 40 mm", "seller": "tick_tock",
     "description": "Boxed with papers. AAA replica Rolex, mirror quality. Ships from Leeds.", "region": "UK", "language": "en"},
    {"id": "w-2", "kind": "listing", "title": "Oak side table", "description": "Solid oak, pickup only.", "seller": "oakworks",
     "region": "UK", "language": "en"},
]


def moderation(*args, env=None):
    return subprocess.run([sys.executable, "-m", "moderation.cli", *args], cwd=ROOT, check=True, capture_output=True,
                          text=True, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A queue sampled from a score-first run (fake backend, thresholds: no generation), a lead, and the app."""
    chromium_or_skip()
    tmp = tmp_path_factory.mktemp("check")
    dump, run, db, thresholds = tmp / "dump.jsonl", tmp / "run.jsonl", tmp / "review.sqlite", tmp / "t.json"
    dump.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    thresholds.write_text(json.dumps({p: 0.5 for p in load_policy().ids}))
    moderation("run", str(dump), "-o", str(run), "--backend", "fake", "--thresholds", str(thresholds), "--no-progress")
    moderation("review", "sample", str(run), "--input", str(dump), "--audit-rate", "1.0", "--queue", "why", "--db", str(db))
    moderation("review", "user", "add", "lee", "--role", "lead", "--password-env", "PW", "--db", str(db), env={"PW": PASSWORD})
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moderation.cli", "review", "serve", "--db", str(db), "--port", str(port)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(url + "/login", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail(f"review app did not start: {proc.stdout.read().decode()[-2000:]}")
    yield url, db, tmp
    proc.terminate()
    proc.wait(timeout=10)


def pixels(png: bytes) -> list[tuple[int, int, int]]:
    import numpy as np
    from PIL import Image

    return [tuple(px) for px in np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3).tolist()]


def near(rgb, target, tolerance=24) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(rgb, target))


def test_check_page_shows_why_beside_the_item_and_draws_it(server):
    from playwright.sync_api import sync_playwright

    url, db, tmp = server
    check = next(c for c in Store(db).checks("why") if c.model_verdict["violations"])
    [violation] = check.model_verdict["violations"]
    definition = load_policy().entry(violation["policy"]).definition
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_or_skip(), args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        page.goto(url + "/login")
        page.fill("input[name=name]", "lee")
        page.fill("input[name=password]", PASSWORD)
        with page.expect_navigation():
            page.keyboard.press("Enter")
        page.goto(url + f"/checks/{check.check_id}")
        reason = page.locator(f"#why .reason[data-policy={violation['policy']}]")
        assert reason.count() == 1
        assert definition in reason.locator(".definition").inner_text()
        score = check.sample["scores"]["policies"][violation["policy"]]
        threshold = check.sample["scores"]["explanation"]["thresholds"][violation["policy"]]
        assert reason.locator(".score").inner_text().split() == ["score", f"{score:.2f}", "≥", "threshold", f"{threshold:.2f}"]
        mark = page.locator("#item mark").first
        assert mark.inner_text() == violation["evidence"]  # in place: inside the item's own field
        assert mark.evaluate("m => m.closest('dd').classList.contains('field-description')")
        # Side by side: the reasons sit to the right of the item, their tops within the first screen.
        item_box, why_box = page.locator("#item").bounding_box(), page.locator("#why").bounding_box()
        assert why_box["x"] >= item_box["x"] + item_box["width"] - 1 and why_box["y"] < 900
        # The screenshot: the highlight is drawn in its colour, the reasons panel is drawn (not blank).
        shot = page.screenshot(path=str(tmp / "check.png"), full_page=True)
        assert sum(near(px, MARK_RGB) for px in pixels(mark.screenshot())) > 0.5 * len(pixels(mark.screenshot()))
        assert len(set(pixels(page.locator("#why").screenshot()))) > 20
        assert sum(near(px, MARK_RGB) for px in pixels(shot)) > 200  # the item's mark and the reason's quote
        reason.hover()  # pointing at a reason outlines its evidence in the item
        assert "focus" in mark.get_attribute("class")
        browser.close()
