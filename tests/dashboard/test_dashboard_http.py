"""The dashboard over real HTTP (no browser): access rules, CSRF, actions, pagination, bad input."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from dashkit import ADMIN_KEY, VIEWER_KEY, Site, record_calls, seed_fleet, seed_history, start_site

from smallfleet.testing import ScriptedUpstream


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, upstream: ScriptedUpstream) -> Iterator[Site]:
    s = start_site(tmp_path_factory.mktemp("dash"), upstream, keys=True)
    record_calls(s, upstream, n=9)
    seed_history(s.store, n=60)
    seed_fleet(s.store)
    yield s
    s.stop()


def _csrf(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, "no CSRF token in the page"
    return m.group(1)


def _login(site: Site, key: str) -> httpx.Client:
    c = site.client(follow_redirects=False)
    page = c.get("/ui/login")
    assert page.status_code == 200
    r = c.post("/ui/login", data={"key": key, "csrf": _csrf(page.text), "next": "/ui/routes"})
    assert r.status_code == 303 and r.headers["location"] == "/ui/routes"
    assert "httponly" in r.headers["set-cookie"].lower()
    return c


PAGES = [
    "/ui",
    "/ui/",
    "/ui/workloads",
    "/ui/routes",
    "/ui/traces",
    "/ui/report",
    "/ui?range=1h",
    "/ui?range=all",
]


@pytest.mark.parametrize("path", PAGES)
def test_pages_need_a_key(site: Site, path: str) -> None:
    with site.client() as c:
        r = c.get(path)
    assert r.status_code == 401
    assert 'action="/ui/login"' in r.text  # a browser gets the login form
    with site.client("wrong-key") as c:
        assert c.get(path).status_code == 401


@pytest.mark.parametrize("path", PAGES)
def test_any_valid_key_can_read(site: Site, path: str) -> None:
    with site.client(VIEWER_KEY) as c:
        r = c.get(path)
    assert r.status_code == 200, r.text[:300]
    assert r.headers["content-type"].startswith("text/html")


def test_overview_figures(site: Site) -> None:
    with site.client(VIEWER_KEY) as c:
        html = c.get("/ui?range=7d").text
    # 9 calls through the gateway + 60 seeded; 40 of the seeded were served small.
    assert ">69</b><span>calls" in html
    assert "58.0%</b><span>served small" in html
    assert "low_confidence" in html and "invalid_output" in html
    assert html.count("<svg") >= 5


def test_viewer_cannot_act(site: Site) -> None:
    before = site.routes.get("triage-intent")
    with site.client(VIEWER_KEY) as c:
        r = c.post("/ui/routes/triage-intent/mode", data={"mode": "on"})
        assert r.status_code == 403
        r = c.post("/ui/routes/triage-intent/rollback")
        assert r.status_code == 403
        assert "Set mode" not in c.get("/ui/routes").text  # no buttons for a read-only key
    c = _login(site, VIEWER_KEY)
    token = _csrf(c.get("/ui/routes").text)  # the sign-out form's token
    assert c.post("/ui/routes/triage-intent/mode", data={"mode": "on", "csrf": token}).status_code == 403
    after = site.routes.get("triage-intent")
    assert (after.version, after.mode) == (before.version, before.mode)


def test_no_key_cannot_act(site: Site) -> None:
    with site.client() as c:
        assert c.post("/ui/routes/triage-intent/mode", data={"mode": "on"}).status_code == 401
    assert site.routes.get("triage-intent").mode != "on"


def test_admin_acts_with_bearer_and_is_recorded(site: Site) -> None:
    with site.client(ADMIN_KEY, follow_redirects=False) as c:
        r = c.post("/ui/routes/triage-intent/mode", data={"mode": "canary", "fraction": "0.3"})
        assert r.status_code == 303
        assert site.routes.get("triage-intent").mode == "canary:0.3"
        page = c.get(r.headers["location"]).text
    assert "mode set to canary:0.3 by ops" in page
    ev = site.routes.events("triage-intent", limit=1)[0]
    assert (ev.action, ev.actor, ev.detail["new"]) == ("set-mode", "ops", "canary:0.3")


def test_cookie_session_needs_csrf(site: Site) -> None:
    c = _login(site, ADMIN_KEY)
    assert c.get("/ui/routes").status_code == 200
    r = c.post("/ui/routes/triage-intent/mode", data={"mode": "off"})
    assert r.status_code == 403 and "CSRF" in r.text
    r = c.post("/ui/routes/triage-intent/mode", data={"mode": "off", "csrf": "0" * 64})
    assert r.status_code == 403
    assert site.routes.get("triage-intent").mode != "off"
    token = _csrf(c.get("/ui/routes").text)
    r = c.post("/ui/routes/triage-intent/mode", data={"mode": "off", "csrf": token})
    assert r.status_code == 303
    assert site.routes.get("triage-intent").mode == "off"
    # sign out: the key cookie is gone, pages ask again
    r = c.post("/ui/logout", data={"csrf": token})
    assert r.status_code == 303
    assert c.get("/ui").status_code == 401


def test_rollback_then_nothing_before(site: Site) -> None:
    with site.client(ADMIN_KEY, follow_redirects=False) as c:
        assert site.routes.get("triage-intent").version == 2
        assert c.post("/ui/routes/triage-intent/rollback").status_code == 303
        assert site.routes.get("triage-intent").version == 1
        r = c.post("/ui/routes/triage-intent/rollback")
        assert r.status_code == 400 and "no version before 1" in r.text
        assert site.routes.events("triage-intent", limit=5)[1].action in ("rollback", "set-mode")
        # bring version 2 back for the other tests
        from smallfleet.routing.routes import Route

        site.routes.promote(
            Route(name="triage-intent", kind="classifier", specialist_path="/x", threshold=0.8)
        )


def test_login_rejects_a_bad_key_and_open_redirects(site: Site) -> None:
    c = site.client(follow_redirects=False)
    token = _csrf(c.get("/ui/login").text)
    r = c.post("/ui/login", data={"key": "nope", "csrf": token})
    assert r.status_code == 401 and "Incorrect API key" in r.text
    r = c.post("/ui/login", data={"key": ADMIN_KEY, "csrf": "forged"})
    assert r.status_code == 403
    r = c.post("/ui/login", data={"key": ADMIN_KEY, "csrf": token, "next": "https://evil.example/"})
    assert r.status_code == 303 and r.headers["location"] == "/ui"


@pytest.mark.parametrize(
    ("method", "path", "data", "status"),
    [
        ("GET", "/ui?range=3y", None, 400),
        ("GET", "/ui/traces?after=garbage", None, 400),
        ("GET", "/ui/traces?after=1.5:", None, 400),
        ("GET", "/ui/traces?range=nope", None, 400),
        ("GET", "/ui/traces/does-not-exist", None, 404),
        ("GET", "/ui/static/../app.py", None, 404),
        ("GET", "/ui/static/nothing.css", None, 404),
        ("GET", "/ui/nowhere", None, 404),
        ("POST", "/ui/routes/nope/mode", {"mode": "on"}, 400),
        ("POST", "/ui/routes/triage-intent/mode", {"mode": "sideways"}, 400),
        ("POST", "/ui/routes/triage-intent/mode", {"mode": "canary", "fraction": "2"}, 400),
        ("POST", "/ui/routes/triage-intent/mode", {}, 400),
        ("POST", "/ui/routes/triage-intent/mode", b"\xff\xfe", 400),
    ],
)
def test_bad_input_is_a_clear_error(site: Site, method: str, path: str, data: object, status: int) -> None:
    with site.client(ADMIN_KEY) as c:
        if isinstance(data, bytes):
            r = c.request(method, path, content=data)
        else:
            r = c.request(method, path, data=data)
    assert r.status_code == status
    assert "Traceback" not in r.text


def test_traces_keyset_pages_cover_everything_once(site: Site) -> None:
    seen: list[str] = []
    url: str | None = "/ui/traces?range=all"
    pages = 0
    with site.client(VIEWER_KEY) as c:
        while url:
            html = c.get(url).text
            seen += re.findall(r'href="/ui/traces/([0-9a-f]+)"', html)
            nxt = re.search(r'href="([^"]*after=[^"]*)" id="next-page"', html)
            url = nxt.group(1).replace("&amp;", "&") if nxt else None
            pages += 1
    total = site.store.count_traces()
    assert pages == -(-total // 50) and len(seen) == len(set(seen)) == total


def test_trace_search_filters(site: Site) -> None:
    with site.client(VIEWER_KEY) as c:
        html = c.get("/ui/traces", params={"q": "printer 5 is on fire"}).text
        ids = re.findall(r'href="/ui/traces/([0-9a-f]+)"', html)
        assert len(ids) == 1
        assert site.store.get_trace(ids[0]).workload == "triage"
        html = c.get("/ui/traces", params={"route": "specialist", "range": "7d"}).text
        assert len(re.findall(r'class="trace-link"', html)) == 40
        html = c.get("/ui/traces", params={"workload": "support", "status": "ok"}).text
        assert len(re.findall(r'class="trace-link"', html)) == 6
        detail = c.get(f"/ui/traces/{ids[0]}").text
    assert "printer 5 is on fire" in detail and "hardware" in detail


def test_static_assets_ship_in_the_package() -> None:
    from importlib import resources

    root = resources.files("smallfleet.dashboard")
    for name in (
        "static/dashboard.css",
        "static/dashboard.js",
        "templates/base.html",
        "templates/traces.html",
    ):
        assert (root / name).is_file(), name
    assert "cdn" not in (root / "templates/base.html").read_text().lower()


def test_open_when_keys_are_off(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    s = start_site(tmp_path, upstream, keys=False)
    try:
        seed_fleet(s.store)
        with s.client(follow_redirects=False) as c:
            assert c.get("/ui").status_code == 200
            page = c.get("/ui/routes")
            assert "Set mode" in page.text
            # still CSRF-protected: a cross-site form post carries no token
            assert c.post("/ui/routes/triage-intent/mode", data={"mode": "on"}).status_code == 403
            r = c.post("/ui/routes/triage-intent/mode", data={"mode": "on", "csrf": _csrf(page.text)})
            assert r.status_code == 303
        assert s.routes.get("triage-intent").mode == "on"
        assert s.routes.events("triage-intent", limit=1)[0].actor == "dashboard"
    finally:
        s.stop()


def test_mounted_in_the_gateway_beside_v1(site: Site) -> None:
    with site.client(VIEWER_KEY) as c:
        assert c.get("/v1/models").json()["data"][0]["id"] == "big"
        r = c.get("/uiother")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        assert c.get("/ui/static/dashboard.js").headers["content-type"].startswith("text/javascript")


def test_pages_cannot_be_framed_and_run_only_our_script(site: Site) -> None:
    with site.client(VIEWER_KEY) as c:
        r = c.get("/ui/routes")
    assert r.headers["x-frame-options"] == "DENY"
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert "<script>" not in r.text
