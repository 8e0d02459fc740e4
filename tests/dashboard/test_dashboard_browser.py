"""The dashboard in real headless Chromium, against a gateway started here with traces recorded through it.

Screenshots of every page go to ``$SMALLFLEET_SCREENSHOTS`` (else a temp dir, printed).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dashkit import ADMIN_KEY, VIEWER_KEY, Site, record_calls, seed_fleet, seed_history, start_site

from smallfleet.testing import ScriptedUpstream

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def shots(screenshots_env: str | None) -> Path:
    path = Path(screenshots_env or tempfile.mkdtemp(prefix="smallfleet-ui-"))
    path.mkdir(parents=True, exist_ok=True)
    print(f"\ndashboard screenshots: {path}")
    return path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, upstream: ScriptedUpstream) -> Iterator[Site]:
    s = start_site(tmp_path_factory.mktemp("ui"), upstream, keys=True)
    record_calls(s, upstream, n=15)
    seed_history(s.store, n=90)
    seed_fleet(s.store)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
        pytest.skip(f"Chromium not found at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


class Tab:
    """A browser page that collects console errors and failed requests."""

    def __init__(self, browser: Any, base: str) -> None:
        self.ctx = browser.new_context(base_url=base, viewport={"width": 1360, "height": 900})
        self.page = self.ctx.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def login(self, key: str) -> None:
        self.page.goto("/ui/login")
        self.page.fill("input[name=key]", key)
        self.page.click("button[type=submit]")
        self.page.wait_for_load_state()
        assert "/login" not in self.page.url

    def close(self) -> None:
        self.ctx.close()


@pytest.fixture(scope="module")
def admin(browser: Any, site: Site) -> Iterator[Tab]:
    tab = Tab(browser, site.base)
    tab.login(ADMIN_KEY)
    yield tab
    tab.close()


@pytest.mark.parametrize(
    ("name", "path", "marker"),
    [
        ("overview", "/ui", "#chart-calls"),
        ("overview-7d", "/ui?range=7d", "#chart-latency"),
        ("workloads", "/ui/workloads", "#chart-agreement"),
        ("routes", "/ui/routes", "#events"),
        ("traces", "/ui/traces", "#traces"),
        ("report", "/ui/report", "#summary"),
    ],
)
def test_page_loads_clean(admin: Tab, shots: Path, name: str, path: str, marker: str) -> None:
    admin.errors.clear()
    resp = admin.page.goto(path)
    assert resp is not None and resp.status == 200
    admin.page.wait_for_selector(marker)
    admin.page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
    assert admin.errors == [], admin.errors


def test_charts_render(admin: Tab) -> None:
    admin.page.goto("/ui?range=7d")
    for chart in ("calls", "share", "latency", "cost", "tokens", "escalations"):
        svg = admin.page.locator(f"#chart-{chart} svg")
        assert svg.count() == 1, chart
        box = svg.bounding_box()
        assert box and box["width"] > 200 and box["height"] > 100, chart
    # bars with height: both large and small calls were drawn
    heights = admin.page.eval_on_selector_all(
        "#chart-calls svg rect[fill]", "els => els.map(e => parseFloat(e.getAttribute('height')))"
    )
    assert sum(1 for h in heights if h > 0) >= 4
    assert admin.page.locator("#chart-latency svg path").count() >= 2
    assert admin.page.locator("#chart-share svg path, #chart-share svg circle").count() >= 2


def test_range_selector(admin: Tab) -> None:
    admin.page.goto("/ui")
    admin.page.click(".ranges a[data-range='1h']")
    admin.page.wait_for_url(re.compile(r"range=1h"))
    assert "last 1h" in admin.page.inner_text("h1")
    assert admin.page.locator(".ranges a.active").inner_text() == "1h"


def test_search_and_open_a_trace(admin: Tab, shots: Path) -> None:
    admin.errors.clear()
    admin.page.goto("/ui/traces")
    admin.page.fill("input[name=q]", "printer 5 is on fire")
    admin.page.click("#search button[type=submit]")
    admin.page.wait_for_url(re.compile(r"q=printer"))
    links = admin.page.locator("a.trace-link")
    assert links.count() == 1
    links.first.click()
    admin.page.wait_for_selector("#request-json")
    assert "printer 5 is on fire" in admin.page.inner_text("#request-json")
    assert "hardware" in admin.page.inner_text("#response-json")
    assert "triage" in admin.page.inner_text("table.fields")
    admin.page.screenshot(path=str(shots / "trace.png"), full_page=True)
    assert admin.errors == [], admin.errors


def test_paging_through_traces(admin: Tab) -> None:
    admin.page.goto("/ui/traces")
    first = admin.page.locator("a.trace-link").all_inner_texts()
    admin.page.click("#next-page")
    admin.page.wait_for_url(re.compile(r"after="))
    second = admin.page.locator("a.trace-link").all_inner_texts()
    assert len(first) == 50 and second and first[-1] >= second[0]


def test_change_a_route_mode_with_the_button(admin: Tab, site: Site, shots: Path) -> None:
    admin.errors.clear()
    admin.page.goto("/ui/routes")
    form = admin.page.locator("#route-triage-intent form.mode-form")
    assert not form.locator(".fraction").is_visible()  # only for canary
    form.locator("select[name=mode]").select_option("canary")
    assert form.locator(".fraction").is_visible()
    form.locator("input[name=fraction]").fill("0.2")
    form.locator("button[type=submit]").click()
    admin.page.wait_for_selector("#flash")
    assert site.routes.get("triage-intent").mode == "canary:0.2"
    assert "canary:0.2" in admin.page.inner_text("#route-triage-intent [data-testid=mode]")
    assert "ops" in admin.page.inner_text("#events tbody tr:first-child")
    admin.page.screenshot(path=str(shots / "routes-after.png"), full_page=True)
    form = admin.page.locator("#route-triage-intent form.mode-form")
    form.locator("select[name=mode]").select_option("on")
    form.locator("button[type=submit]").click()
    admin.page.wait_for_selector("#flash")
    assert site.routes.get("triage-intent").mode == "on"
    assert admin.errors == [], admin.errors


def test_roll_back_with_the_button(admin: Tab, site: Site) -> None:
    assert site.routes.get("triage-intent").version == 2
    admin.page.goto("/ui/routes")
    admin.page.once("dialog", lambda d: d.accept())
    admin.page.click("#route-triage-intent button.secondary")
    admin.page.wait_for_selector("#flash")
    assert site.routes.get("triage-intent").version == 1
    assert "rolled back to version 1 by ops" in admin.page.inner_text("#flash")


def test_read_only_key_cannot_change_anything(browser: Any, site: Site, shots: Path) -> None:
    tab = Tab(browser, site.base)
    try:
        tab.login(VIEWER_KEY)
        tab.page.goto("/ui/routes")
        assert tab.page.locator("form.mode-form").count() == 0
        assert "read-only" in tab.page.inner_text("main")
        tab.page.screenshot(path=str(shots / "routes-readonly.png"), full_page=True)
        mode = site.routes.get("triage-intent").mode
        # even a hand-made POST from this signed-in browser is refused
        status = tab.page.evaluate(
            """async () => (await fetch('/ui/routes/triage-intent/mode', {method: 'POST',
                 headers: {'content-type': 'application/x-www-form-urlencoded'}, body: 'mode=off'})).status"""
        )
        assert status == 403
        assert site.routes.get("triage-intent").mode == mode
    finally:
        tab.close()


def test_no_key_is_refused(browser: Any, site: Site, shots: Path) -> None:
    tab = Tab(browser, site.base)
    try:
        resp = tab.page.goto("/ui/routes")
        assert resp is not None and resp.status == 401
        assert tab.page.locator("input[name=key]").is_visible()
        tab.page.screenshot(path=str(shots / "login.png"), full_page=True)
        status = tab.page.evaluate(
            "async () => (await fetch('/ui/routes/triage-intent/rollback', {method: 'POST'})).status"
        )
        assert status == 401
        # a 401 page load is itself reported on the console; nothing else may be
        assert all("401" in e for e in tab.errors), tab.errors
    finally:
        tab.close()
