"""The HTML report in a real browser: no console errors, charts drawn, verdict counts right."""

from __future__ import annotations

import shutil

import pytest

from qdqbench.cli import main
from qdqbench.core.results import load_records

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_report_renders_in_chromium(tiny_suite, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is a dev extra")
    out = tmp_path / "runs"
    assert main(["run", str(tiny_suite), "--out", str(out), "--quiet"]) == 0
    (run_dir,) = list(out.iterdir())
    records = load_records(run_dir)
    verdicts = [r.verdict for r in records if r.verdict is not None and r.backend == "torch"]
    pairs_passing = int(any(v.passed for v in verdicts))

    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 1800})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: errors.append(f"network request {r.url}")
                    if not r.url.startswith(("file:", "data:", "about:")) else None)
            page.goto((run_dir / "report.html").as_uri())
            page.wait_for_load_state("load")
            headline = page.locator("#verdict").inner_text()
            assert f"{pairs_passing} of 1 model" in headline
            charts = page.locator("svg")
            assert charts.count() >= 1
            for i in range(charts.count()):
                box = charts.nth(i).bounding_box()
                assert box and box["width"] > 50 and box["height"] > 50
            # Sorting works: clicking a header reorders rows without errors.
            page.locator("table.sortable th").first.click()
            page.screenshot(path=str(run_dir / "report.png"), full_page=True)
        finally:
            browser.close()
    assert errors == []
    assert (run_dir / "report.png").stat().st_size > 10_000
