"""Dashboard sessions over real HTTP, real gateways: signed, made only after a key; replicas share them.

Several gateways run on one store: two replicas sharing ``gateway.session_secret``, one with another
secret, one where the admin key was removed and one where it was replaced (the same name, a new key).
"""

from __future__ import annotations

import base64
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from dashkit import ADMIN_KEY, VIEWER_KEY, Site, seed_fleet, start_site

from smallfleet.config import GatewayKey
from smallfleet.dashboard.access import LOGIN_COOKIE, SESSION_COOKIE, Sessions, key_tag
from smallfleet.gateway.auth import hash_key
from smallfleet.testing import ScriptedUpstream

SECRET = "replicas-share-this-secret"
NEW_ADMIN_KEY = "sf-admin-" + "c" * 20
ROUTE = "/ui/routes/triage-intent/mode"
OPS = {"name": "ops", "sha256": hash_key(ADMIN_KEY), "admin": True}
VIEWER = {"name": "viewer", "sha256": hash_key(VIEWER_KEY)}


def _start(tmp: Path, upstream: ScriptedUpstream, specs: dict[str, dict], keys: bool) -> dict[str, Site]:
    url = f"sqlite:///{tmp / 'traces.db'}"
    started: dict[str, Site] = {}
    try:
        for name, gateway in specs.items():
            started[name] = start_site(tmp, upstream, keys=keys, store_url=url, gateway=gateway)
    except BaseException:
        for s in started.values():
            s.stop()
        raise
    seed_fleet(started["a"].store)
    return started


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory, upstream: ScriptedUpstream) -> Iterator[dict[str, Site]]:
    specs = {
        "a": {"session_secret": SECRET},
        "b": {"session_secret": SECRET},
        "other": {"session_secret": "not-the-same-secret"},
        "revoked": {"session_secret": SECRET, "keys": [VIEWER]},
        "rotated": {"session_secret": SECRET, "keys": [{**OPS, "sha256": hash_key(NEW_ADMIN_KEY)}, VIEWER]},
    }
    started = _start(tmp_path_factory.mktemp("sessions"), upstream, specs, keys=True)
    yield started
    for s in started.values():
        s.stop()


def _csrf(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]*)"', html)
    assert m, "no CSRF field in the page"
    return m.group(1)


def _sign_in(site: Site, key: str) -> str:
    """Sign in through the form; the session cookie's value."""
    with site.client(follow_redirects=False) as c:
        page = c.get("/ui/login")
        r = c.post("/ui/login", data={"key": key, "csrf": _csrf(page.text), "next": "/ui/routes"})
        assert r.status_code == 303, r.text
        return r.cookies[SESSION_COOKIE]


def _get(site: Site, path: str, cookie: str) -> httpx.Response:
    with site.client() as c:
        return c.get(path, headers={"cookie": cookie})


def _act(site: Site, cookie: str, token: str, mode: str) -> httpx.Response:
    """A form post as a browser sends it: its cookies in one header, the token in the body."""
    with site.client() as c:
        return c.post(ROUTE, data={"mode": mode, "csrf": token}, headers={"cookie": cookie})


def _token(site: Site, session: str) -> str:
    r = _get(site, "/ui/routes", f"{SESSION_COOKIE}={session}")
    assert r.status_code == 200
    return _csrf(r.text)


def _mode(site: Site) -> str:
    return site.routes.get("triage-intent").mode


def test_login_page_mints_nothing_that_can_read_or_act(sites: dict[str, Site]) -> None:
    a = sites["a"]
    before = _mode(a)
    with a.client(follow_redirects=False) as c:
        page = c.get("/ui/login")
        assert SESSION_COOKIE not in page.cookies  # no session before a key
        nonce, token = page.cookies[LOGIN_COOKIE], _csrf(page.text)
        cookie = f"{LOGIN_COOKIE}={nonce}"
    assert _get(a, "/ui/routes", cookie).status_code == 401
    assert _act(a, cookie, token, "on").status_code == 401
    # ... nor beside an admin's session (the attack of issue 16): the login token is not the session's
    admin = _sign_in(a, ADMIN_KEY)
    r = _act(a, f"{SESSION_COOKIE}={admin}; {cookie}", token, "on")
    assert r.status_code == 403 and "CSRF" in r.text
    assert _mode(a) == before


def test_a_planted_session_beside_an_admins_is_refused(sites: dict[str, Site]) -> None:
    a = sites["a"]
    before = _mode(a)
    admin, planted = _sign_in(a, ADMIN_KEY), _sign_in(a, VIEWER_KEY)  # the attacker holds a viewer key
    theirs = _token(a, planted)
    for cookie in (
        f"{SESSION_COOKIE}={planted}; {SESSION_COOKIE}={admin}",
        f"{SESSION_COOKIE}={admin}; {SESSION_COOKIE}={planted}",
        f"{SESSION_COOKIE}=made-up-by-the-attacker; {SESSION_COOKIE}={admin}",
    ):
        assert _act(a, cookie, theirs, "on").status_code == 403, cookie
        assert _act(a, cookie, _token(a, admin), "on").status_code == 403, cookie  # two sessions: refused
    assert _act(a, f"{SESSION_COOKIE}={admin}", theirs, "on").status_code == 403  # their token, my session
    assert _act(a, f"{SESSION_COOKIE}={planted}", theirs, "on").status_code == 403  # a viewer
    assert _mode(a) == before


def test_forged_sessions_are_refused(sites: dict[str, Site]) -> None:
    a = sites["a"]
    before = _mode(a)
    viewer = _sign_in(a, VIEWER_KEY)
    token = _token(a, viewer)  # all an attacker with a viewer key can have
    parts = viewer.split(".")
    ops = GatewayKey.model_validate(OPS)
    parts[1], parts[2] = base64.urlsafe_b64encode(b"ops").decode().rstrip("="), key_tag(ops)
    renamed = ".".join(parts)  # the viewer's session, renamed to the admin key, signature kept
    guessed = Sessions("a-guessed-secret").issue(ops)
    expired = Sessions(SECRET).issue(ops, now=time.time() - 13 * 3600)
    for forged in (renamed, guessed, expired, "v1.b3Bz.x.9999999999.n.sig", "", "...."):
        cookie = f"{SESSION_COOKIE}={forged}"
        assert _get(a, "/ui", cookie).status_code == 401, forged
        assert _act(a, cookie, token, "on").status_code == 401, forged
    assert _mode(a) == before
    # the control: the same secret, the real key, not expired
    good = Sessions(SECRET).issue(ops)
    assert _get(a, "/ui", f"{SESSION_COOKIE}={good}").status_code == 200


def test_an_admin_session_acts_with_its_own_token(sites: dict[str, Site]) -> None:
    a = sites["a"]
    admin = _sign_in(a, ADMIN_KEY)
    assert _act(a, f"{SESSION_COOKIE}={admin}", _token(a, admin), "shadow").status_code == 303
    assert _mode(a) == "shadow"
    assert a.routes.events("triage-intent", limit=1)[0].actor == "ops"


def test_replicas_with_one_secret_share_sessions_and_tokens(sites: dict[str, Site]) -> None:
    a, b, other = sites["a"], sites["b"], sites["other"]
    admin = _sign_in(a, ADMIN_KEY)
    token = _token(a, admin)  # the form as replica A served it
    cookie = f"{SESSION_COOKIE}={admin}"
    assert _get(b, "/ui/routes", cookie).status_code == 200
    assert _act(b, cookie, token, "canary").status_code == 303
    assert _mode(a) == "canary:0.1"
    # a gateway with another secret knows neither the session nor its token
    assert _get(other, "/ui/routes", cookie).status_code == 401
    assert _act(other, cookie, token, "on").status_code == 401
    assert _mode(a) == "canary:0.1"


def test_a_removed_or_replaced_key_ends_its_sessions(sites: dict[str, Site]) -> None:
    a = sites["a"]
    before = _mode(a)
    admin, viewer = _sign_in(a, ADMIN_KEY), _sign_in(a, VIEWER_KEY)
    token = _token(a, admin)
    cookie = f"{SESSION_COOKIE}={admin}"
    for name in ("revoked", "rotated"):  # the key is gone / "ops" is now another key
        assert _get(sites[name], "/ui", cookie).status_code == 401, name
        assert _act(sites[name], cookie, token, "on").status_code == 401, name
    assert _get(sites["revoked"], "/ui", f"{SESSION_COOKIE}={viewer}").status_code == 200  # still configured
    fresh = f"{SESSION_COOKIE}={_sign_in(sites['rotated'], NEW_ADMIN_KEY)}"
    assert _get(sites["rotated"], "/ui", fresh).status_code == 200
    assert _mode(a) == before


def test_a_key_removed_from_the_config_file_ends_its_session_in_place(
    sites: dict[str, Site], tmp_path: Path
) -> None:
    """The same dashboard, its KeyRing re-reading the config file: no restart, no new app."""
    import yaml

    from smallfleet.dashboard import create_dashboard
    from smallfleet.gateway.auth import KeyRing
    from smallfleet.gateway.server import BackgroundServer

    config = tmp_path / "smallfleet.yaml"
    config.write_text(yaml.safe_dump({"gateway": {"keys": [OPS, VIEWER]}}))
    keys = KeyRing([GatewayKey.model_validate(k) for k in (OPS, VIEWER)], source=config, reload_seconds=0.05)
    ui = create_dashboard(sites["a"].store, keys, session_secret=SECRET)
    server = BackgroundServer(ui).start()
    try:
        admin = _sign_in(sites["a"], ADMIN_KEY)  # a replica's session: the same secret
        with httpx.Client(base_url=server.base, headers={"cookie": f"{SESSION_COOKIE}={admin}"}) as c:
            assert c.get("/ui/routes").status_code == 200
            config.write_text(yaml.safe_dump({"gateway": {"keys": [VIEWER]}}))
            deadline = time.monotonic() + 5
            while c.get("/ui/routes").status_code == 200 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert c.get("/ui/routes").status_code == 401
    finally:
        server.stop()


def test_the_key_is_never_in_a_cookie(sites: dict[str, Site]) -> None:
    a = sites["a"]
    seen: list[str] = []

    def collect(r: httpx.Response) -> None:
        seen.extend(r.headers.get_list("set-cookie"))

    with a.client(follow_redirects=False, event_hooks={"response": [collect]}) as c:
        c.get("/ui")
        page = c.get("/ui/login")
        c.post("/ui/login", data={"key": "wrong", "csrf": _csrf(page.text)})
        assert c.post("/ui/login", data={"key": ADMIN_KEY, "csrf": _csrf(page.text)}).status_code == 303
        token = _csrf(c.get("/ui/routes").text)
        assert c.post(ROUTE, data={"mode": "shadow", "csrf": token}).status_code == 303
        assert c.post("/ui/logout", data={"csrf": token}).status_code == 303
        assert c.get("/ui").status_code == 401  # signed out: the cookie is gone
    assert seen and any(s.startswith(f"{SESSION_COOKIE}=v1.") for s in seen)
    for header in seen:
        low = header.lower()
        assert ADMIN_KEY not in header and hash_key(ADMIN_KEY) not in header
        assert "httponly" in low and "samesite=strict" in low and "secure" not in low, header
    issued = next(s for s in seen if s.startswith(f"{SESSION_COOKIE}=v1."))
    assert "max-age=43200" in issued.lower()


def test_cookies_are_secure_over_https(sites: dict[str, Site]) -> None:
    a = sites["a"]
    https = {"x-forwarded-proto": "https"}  # what a TLS proxy in front says (uvicorn trusts loopback)
    with a.client(follow_redirects=False) as c:
        page = c.get("/ui/login", headers=https)
        nonce = page.headers["set-cookie"].split(";")[0].partition("=")[2]
        r = c.post(
            "/ui/login",
            data={"key": ADMIN_KEY, "csrf": _csrf(page.text)},
            headers={**https, "cookie": f"{LOGIN_COOKIE}={nonce}"},
        )
    assert r.status_code == 303
    headers = page.headers.get_list("set-cookie") + r.headers.get_list("set-cookie")
    assert len(headers) == 3 and all("; secure" in h.lower() for h in headers), headers


# ---------------------------------------------------------------- keys off


@pytest.fixture(scope="module")
def open_sites(
    tmp_path_factory: pytest.TempPathFactory, upstream: ScriptedUpstream
) -> Iterator[dict[str, Site]]:
    specs = {"a": {"session_secret": SECRET}, "b": {"session_secret": SECRET}, "other": {}}
    started = _start(tmp_path_factory.mktemp("open"), upstream, specs, keys=False)
    yield started
    for s in started.values():
        s.stop()


def test_keys_off_the_first_page_view_issues_the_session(
    open_sites: dict[str, Site], caplog: pytest.LogCaptureFixture
) -> None:
    a, b, other = open_sites["a"], open_sites["b"], open_sites["other"]
    with a.client(follow_redirects=False) as c:
        assert SESSION_COOKIE not in c.get("/ui/login").cookies  # nothing to sign in to: no session here
        page = c.get("/ui/routes")
        assert page.status_code == 200 and "Set mode" in page.text
        session, token = page.cookies[SESSION_COOKIE], _csrf(page.text)
    cookie = f"{SESSION_COOKIE}={session}"
    assert _act(a, "", token, "on").status_code == 403  # a cross-site post carries no session
    assert _act(a, cookie, "0" * 64, "on").status_code == 403
    with caplog.at_level(logging.WARNING, logger="smallfleet.dashboard"):
        assert _act(other, cookie, token, "on").status_code == 403  # another secret: not its session
    assert "session_secret is not set" in caplog.text  # said once, when its dashboard was built
    assert _act(b, cookie, token, "on").status_code == 303  # a replica with the same secret
    assert _mode(a) == "on"
    assert a.routes.events("triage-intent", limit=1)[0].actor == "dashboard"
