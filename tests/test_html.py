"""The HTML leaderboard renders in a real browser: headless Chromium via selenium.

Needs the Debian packages chromium and chromium-driver (``.ci/run`` installs them).
Without them the test is skipped with the reason -- except under CI (``CI=true``),
where a missing browser is a failure: CI must really render the page.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from test_report import FP, HERE_HW, synthetic_store

from evaluation import report as rp
from evaluation.report import context as rp_context
from evaluation.store import Store

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
DRIVER_CANDIDATES = ("chromedriver",)


def _find(names: tuple[str, ...], fallback: str) -> str | None:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return fallback if Path(fallback).is_file() else None


def _browser() -> tuple[str, str]:
    chromium = _find(CHROMIUM_CANDIDATES, "/usr/bin/chromium")
    driver = _find(DRIVER_CANDIDATES, "/usr/bin/chromedriver")
    missing = [n for n, p in (("chromium", chromium), ("chromedriver", driver)) if not p]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install -e '.[dev]')")
    if missing:
        reason = (
            f"headless Chromium not available (missing {', '.join(missing)}); install the "
            "Debian packages chromium and chromium-driver"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    return chromium, driver  # type: ignore[return-value]


@pytest.fixture
def html_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(rp_context, "_hardware", lambda device: HERE_HW)
    ctx = rp.Context(code_version="v1", dataset_fingerprint=FP)
    with Store(synthetic_store(tmp_path)) as store:
        report = rp.build_report(store, ctx, notes=["✓ story line"])
    written = rp.write_reports(report, tmp_path / "report", ["html"])
    return written["html"][0]


def test_html_renders_in_chromium(html_page: Path, tmp_path: Path) -> None:
    chromium, driver_path = _browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1400,1000",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # for the console check
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        driver.set_page_load_timeout(60)
        driver.get(html_page.resolve().as_uri())
        assert driver.title == "trackpilot leaderboard"
        tables = driver.find_elements(By.TAG_NAME, "table")
        assert len(tables) == 7
        for table in tables:
            rows = table.find_elements(By.CSS_SELECTOR, "tbody tr")
            assert rows, "a table rendered without rows"
            assert table.size["height"] > 0 and table.size["width"] > 0
        # The board: one section (a header row) per target, this machine's first.
        groups = tables[0].find_elements(By.CSS_SELECTOR, "tbody tr.group")
        assert [g.text for g in groups] == [
            "this machine", "Raspberry Pi 4 Model B Rev 1.4", "rpi4-tflite",
        ]  # fmt: skip
        board = tables[0].find_elements(By.CSS_SELECTOR, "tbody tr:not(.group)")
        assert len(board) == 9
        assert "✗ latency 180 ms > 50 ms" in board[5].text
        assert "estimated for rpi4-tflite" in board[-1].text
        assert "✗ latency 400 ms > 50 ms" in board[-1].text
        assert "profile: Raspberry Pi 4 Model B Rev 1.4" in board[6].text
        # The recipe's table and the F1-vs-latency scatter, under their headings.
        headings = [h.text for h in driver.find_elements(By.TAG_NAME, "h2")]
        assert "The recipe's table" in headings and "Macro F1 against latency" in headings
        recipe = driver.find_element(By.CSS_SELECTOR, "table.recipe")
        assert recipe.is_displayed()
        heads = [h.text for h in recipe.find_elements(By.TAG_NAME, "th")]
        assert "estimated for rpi4-tflite: closed loop" in heads
        lines = {
            r.find_element(By.TAG_NAME, "td").text: r.text
            for r in recipe.find_elements(By.CSS_SELECTOR, "tbody tr")
        }
        assert set(lines) == {"compact", "compact_cls", "slow_cls"}
        assert "0.900" in lines["slow_cls"] and "✗ 20.0, 4/8 laps, 12 interv." in lines["slow_cls"]
        scatter = driver.find_element(By.CSS_SELECTOR, "figure.f1-latency img")
        assert scatter.is_displayed() and scatter.size["width"] > 100
        caption = driver.find_element(By.CSS_SELECTOR, "figure.f1-latency figcaption").text
        assert "estimates" in caption and "rpi4-tflite" in caption
        images = driver.find_elements(By.TAG_NAME, "img")
        assert len(images) == 7
        # The chooser's columns: robustness beside the score, the spread over seeds.
        assert "10.0 (-90.0)" in board[2].text and "65.0 ± 14.1" in board[4].text
        seeds = driver.find_element(By.CSS_SELECTOR, "table.seeds")
        assert seeds.is_displayed() and "65.0 ± 14.1" in seeds.text
        # Every image decoded: complete, with a natural size (a broken one has 0 x 0).
        sizes = driver.execute_script(
            "return Array.from(document.images).map("
            "i => [i.complete, i.naturalWidth, i.naturalHeight, i.getBoundingClientRect().width])"
        )
        for complete, nw, nh, shown in sizes:
            assert complete and nw > 0 and nh > 0 and shown > 0
        # The run video (an MP4 copied beside the page) loads: its metadata is read (a
        # duration, a frame size) and no error; the one whose file is gone is named.
        video = driver.find_element(By.CSS_SELECTOR, "figure.video video")
        assert video.is_displayed() and video.size["width"] > 100
        state = None
        for _ in range(100):
            state = driver.execute_script(
                "const v = document.querySelector('figure.video video');"
                "return [v.readyState, v.duration, v.videoWidth, v.videoHeight,"
                " v.error && v.error.code, v.currentSrc];"
            )
            if state[0] >= 1 or state[4]:
                break
            time.sleep(0.1)
        ready, duration, width, height, error, src = state
        assert error is None and ready >= 1, state  # HAVE_METADATA or more
        assert duration == pytest.approx(12 / 20, abs=0.06) and (width, height) == (128, 48)
        assert src.startswith((html_page.parent / "videos").resolve().as_uri())
        missing = driver.find_element(By.CSS_SELECTOR, "figure.video.missing")
        assert "video missing" in missing.text and "gone.mp4" in missing.text
        # Nothing was fetched from anywhere but the page itself and its directory.
        urls = driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)"
        )
        here = html_page.parent.resolve().as_uri() + "/"
        assert all(u.startswith(("data:", here)) for u in urls), urls
        # No console errors (a broken image or markup shows there).
        severe = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
        assert not severe, severe
    finally:
        driver.quit()


def test_missing_browser_skips_or_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setattr(sys.modules[__name__], "_find", lambda names, fallback: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="headless Chromium not available"):
        _browser()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true but headless Chromium"):
        _browser()
