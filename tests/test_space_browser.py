"""The Space in a real browser: headless Chromium (Debian's ``chromium``, driven by Playwright through
``executable_path``; no browser download) sees the leaderboard rows and the plot, runs a side-by-side comparison,
and leaves screenshots in the test's tmp dir. The browser comes from the install step, ``make install-browser``."""

from __future__ import annotations

import shutil

import pytest
from conftest import SPACE_TASK

CHROMIUM_NAMES = ("chromium", "chromium-browser")


@pytest.fixture(scope="session")
def chromium() -> str:
    """The installed Chromium; the test skips, saying how to install it, when there is none (before the Space is
    built: its fixture comes after this one)."""
    pytest.importorskip("playwright.sync_api", reason="the playwright package is in the dev extras: `make install`")
    found = next((path for path in map(shutil.which, CHROMIUM_NAMES) if path), None)
    if found is None:
        pytest.skip("Chromium not installed: run `make install-browser`")
    return found


def test_the_space_shows_the_board_and_plot_and_compares_models_in_a_browser(chromium, space_url, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(space_url)

            board = page.locator("#leaderboard-table")
            for model in ("tiny-llama", "synthetic_gsm-sft-1M", "synthetic_gsm-label-3M", "gone-teacher"):
                expect(board).to_contain_text(model, timeout=60_000)
            expect(page.locator("#leaderboard-count")).to_contain_text("6 of 6 rows")
            page.screenshot(path=tmp_path / "leaderboard.png", full_page=True)
            page.locator("#search textarea, #search input").first.fill("label")
            expect(page.locator("#leaderboard-count")).to_contain_text("1 of 6 rows")
            expect(board).not_to_contain_text("tiny-llama")

            page.get_by_role("tab", name="Scaling down").click()
            expect(page.locator("#scaling-plot .marks")).to_be_visible(timeout=30_000)  # vega drew the chart
            expect(page.locator("#scaling-answer")).to_contain_text(
                f"{SPACE_TASK}: the smallest student that beats the best teacher is synthetic_gsm-sft-1M"
            )
            page.screenshot(path=tmp_path / "scaling_down.png", full_page=True)

            # The default picks are the best teacher and the best student; the digit writer is right on 777777.
            page.get_by_role("tab", name="Side by side").click()
            page.locator("#question textarea").fill("What is 3 + 4?")
            page.locator("#gold textarea, #gold input").first.fill("777777")
            tokens = page.locator("#max-new-tokens input[type=number]")
            tokens.fill("6")
            tokens.press("Enter")
            page.locator("#compare").click()
            expect(page.locator("#slot-1-header")).to_contain_text("synthetic_gsm-sft-1M")
            expect(page.locator("#slot-1-stats")).to_contain_text("✅ right: 777777", timeout=60_000)
            expect(page.locator("#slot-1-stats")).to_contain_text("6 tokens")
            expect(page.locator("#slot-1-text textarea")).to_have_value("777777")
            expect(page.locator("#slot-0-header")).to_contain_text("tiny-llama")
            expect(page.locator("#slot-0-stats")).to_contain_text("tokens")
            page.screenshot(path=tmp_path / "side_by_side.png", full_page=True)
        finally:
            browser.close()
    print(f"screenshots: {tmp_path}")
    assert all((tmp_path / name).stat().st_size > 10_000 for name in ("leaderboard.png", "side_by_side.png"))
