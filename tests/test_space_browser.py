"""The Space in a real browser: headless Chromium (Debian's ``chromium``, driven by Playwright through
``executable_path``; no browser download) sees the leaderboard rows and the plot, runs a side-by-side comparison,
and leaves screenshots in the test's tmp dir."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from conftest import SPACE_TASK

CHROMIUM_NAMES = ("chromium", "chromium-browser")
APT_ENV = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}


def find_chromium() -> str | None:
    return next((path for path in map(shutil.which, CHROMIUM_NAMES) if path), None)


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium, installed with apt-get when missing (root only); skips, saying why, when it cannot be."""
    found = find_chromium()
    if found:
        return found
    if shutil.which("apt-get") is None:
        pytest.skip("Chromium is not installed and there is no apt-get to install Debian's `chromium` package")
    if os.geteuid() != 0:
        pytest.skip("Chromium is not installed and installing it needs root: `sudo apt-get install -y chromium`")
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"]
    done = subprocess.run(install, env=APT_ENV, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:  # a fresh image has no package lists yet
        subprocess.run(["apt-get", "update", "-q"], env=APT_ENV, capture_output=True, text=True, timeout=600)
        done = subprocess.run(install, env=APT_ENV, capture_output=True, text=True, timeout=900)
    found = find_chromium()
    if done.returncode != 0 or not found:
        pytest.skip(f"could not install Chromium with apt-get: {(done.stderr or done.stdout)[-500:]}")
    return found


def test_the_space_shows_the_board_and_plot_and_compares_models_in_a_browser(space_url, chromium, tmp_path):
    playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is in the dev extras")
    expect, sync_playwright = playwright_api.expect, playwright_api.sync_playwright

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
            expect(page.locator("#scaling-plot img")).to_be_visible(timeout=30_000)
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
