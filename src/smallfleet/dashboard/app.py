"""The dashboard: a small Starlette app, server-rendered (Jinja2 templates, SVG charts, no CDN).

Mounted by the gateway at ``/ui`` (every path under the prefix comes here)::

    GET  /ui                      overview: calls, tokens, cost, latency over time; large vs small
    GET  /ui/workloads            each workload's task clusters, their routes, shadow agreement
    GET  /ui/routes               active routes and their history; forms to act on them
    POST /ui/routes/NAME/mode     set a route's mode (admin)
    POST /ui/routes/NAME/rollback re-activate the version before (admin)
    GET  /ui/traces               search, keyset-paginated
    GET  /ui/traces/ID            one trace, redacted as stored
    GET  /ui/report               the flywheel's latest report
    GET  /ui/login, POST /ui/login, POST /ui/logout

Pages read the database in Starlette's thread pool, never on the gateway's event loop.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode

from smallfleet.dashboard.access import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    Forbidden,
    Session,
    Sessions,
    Viewer,
    cookie_count,
    identify,
    new_nonce,
)
from smallfleet.errors import SmallfleetError, Unauthorized, UserError

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from smallfleet.config import GatewayKey
    from smallfleet.gateway.auth import KeyRing
    from smallfleet.gateway.metrics import Metrics
    from smallfleet.store.trace_store import TraceStore

__all__ = ["Dashboard", "create_dashboard"]

log = logging.getLogger("smallfleet.dashboard")

PAGE_SIZE = 50
_MAX_FORM = 64 * 1024
_STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}
#: Pages are never cached, never framed (no clickjacking of the action buttons), and run only our script.
_HEADERS = {
    "cache-control": "no-store",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "content-security-policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
        "script-src 'self'; frame-ancestors 'none'; form-action 'self'"
    ),
}
_NAV = [
    ("overview", "", "Overview"),
    ("workloads", "/workloads", "Workloads"),
    ("routes", "/routes", "Routes"),
    ("traces", "/traces", "Traces"),
    ("report", "/report", "Report"),
]


def _when(t: float | None) -> str:
    if t is None:
        return "–"
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _usd(v: float | None) -> str:
    if v is None:
        return "–"
    if v == 0 or abs(v) >= 1:
        return f"${v:,.2f}"
    return f"${v:.4f}" if abs(v) >= 0.01 else f"${v:.6f}"


def _span(seconds: float) -> str:
    for unit, name in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= unit and seconds % unit == 0:
            n = int(seconds // unit)
            return f"{n} {name}" + ("s" if n != 1 else "")
    return f"{seconds:g} s"


def _ms(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:,.0f} ms" if v >= 10 else f"{v:.1f} ms"


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{v:.1%}"


class Dashboard:
    """The ASGI app; build it with :func:`create_dashboard`."""

    def __init__(
        self,
        store: TraceStore,
        keys: KeyRing,
        *,
        metrics: Metrics | None = None,
        prefix: str = "/ui",
        session_secret: str | None = None,
    ) -> None:
        from jinja2 import Environment, PackageLoader, select_autoescape
        from starlette.applications import Starlette
        from starlette.routing import Route

        from smallfleet.dashboard.queries import Rollup
        from smallfleet.routing.routes import RouteStore

        self.store = store
        self.routes = RouteStore(store.engine)
        self.rollup = Rollup(store.engine)
        self.keys = keys
        self.metrics = metrics
        self.prefix = prefix.rstrip("/")
        self.sessions = Sessions(session_secret or _process_secret())
        self.env = Environment(
            loader=PackageLoader("smallfleet.dashboard", "templates"),
            autoescape=select_autoescape(["html"]),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(when=_when, usd=_usd, ms=_ms, pct=_pct, span=_span)
        p = self.prefix
        get = ["GET", "HEAD"]
        self.app = Starlette(
            routes=[
                Route(p, self._wrap(self._overview), methods=get),
                Route(p + "/", self._wrap(self._overview), methods=get),
                Route(p + "/workloads", self._wrap(self._workloads), methods=get),
                Route(p + "/routes", self._wrap(self._routes_page), methods=get),
                Route(p + "/routes/{name}/mode", self._wrap(self._set_mode, action=True), methods=["POST"]),
                Route(
                    p + "/routes/{name}/rollback", self._wrap(self._rollback, action=True), methods=["POST"]
                ),
                Route(p + "/traces", self._wrap(self._traces), methods=get),
                Route(p + "/traces/{trace_id}", self._wrap(self._trace), methods=get),
                Route(p + "/report", self._wrap(self._report), methods=get),
                Route(p + "/login", self._login_page, methods=get),
                Route(p + "/login", self._login, methods=["POST"]),
                Route(p + "/logout", self._logout, methods=["POST"]),
                Route(p + "/static/{file}", self._static, methods=get),
            ],
        )

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)

    # ------------------------------------------------------------ plumbing

    def _render(self, template: str, request: Request, viewer: Viewer | None, **ctx: Any) -> str:
        session: Session | None = request.state.session
        return self.env.get_template(template).render(
            prefix=self.prefix,
            nav=_NAV,
            viewer=viewer,
            csrf=self.sessions.csrf(session) if session is not None else "",
            **ctx,
        )

    def _respond(self, request: Request, body: str, status: int = 200) -> Response:
        from starlette.responses import HTMLResponse

        resp = HTMLResponse(body, status_code=status, headers=_HEADERS)
        self._set_cookies(request, resp)
        return resp

    def _begin(self, request: Request) -> Session | None:
        """Read the request's session (verified, or None) and start with no cookies to send."""
        request.state.cookies = {}
        request.state.session = self.sessions.verify(request.cookies.get(SESSION_COOKIE))
        return request.state.session

    def _start_session(self, request: Request, key: GatewayKey | None) -> None:
        """Issue a signed session (only after authentication, or with keys off) and send its cookie."""
        value = self.sessions.issue(key)
        request.state.session = self.sessions.verify(value)
        request.state.cookies[SESSION_COOKIE] = value

    def _set_cookies(self, request: Request, resp: Response) -> None:
        """Send the cookies queued on ``request.state``: HttpOnly, SameSite=Strict, Secure over https."""
        opts: dict[str, Any] = {
            "httponly": True,
            "samesite": "strict",
            "secure": request.url.scheme == "https",
        }
        for name, value in request.state.cookies.items():
            path = self.prefix + "/login" if name == LOGIN_COOKIE else self.prefix or "/"
            if value is None:
                resp.delete_cookie(name, path=path, **opts)
            elif name == SESSION_COOKIE:
                resp.set_cookie(name, value, max_age=int(self.sessions.ttl), path=path, **opts)
            else:
                resp.set_cookie(name, value, path=path, **opts)

    def _check_action(self, request: Request, session: Session | None, form: dict[str, str]) -> None:
        """A browser's action needs its session's CSRF token, and only one session cookie."""
        if cookie_count(request.headers.get("cookie"), SESSION_COOKIE) > 1:
            raise Forbidden(
                "This browser sent two dashboard session cookies (one was set by another site on this "
                "host); sign out, clear this site's cookies and sign in again."
            )
        self.sessions.check_csrf(session, form.get("csrf"))

    def _login_form(self, request: Request, message: str | None, next_: str, status: int = 200) -> Response:
        """The sign-in page; its token is bound to a random ``sf_login`` cookie that grants nothing."""
        nonce = request.cookies.get(LOGIN_COOKIE) or ""
        if not 16 <= len(nonce) <= 64:
            nonce = request.state.cookies[LOGIN_COOKIE] = new_nonce()
        body = self._render(
            "login.html",
            request,
            None,
            page="login",
            message=message,
            next=next_,
            login_csrf=self.sessions.login_token(nonce),
        )
        return self._respond(request, body, status)

    def _error(self, request: Request, viewer: Viewer | None, e: SmallfleetError) -> Response:
        body = self._render("error.html", request, viewer, status=e.status_code, message=e.message, page="")
        return self._respond(request, body, e.status_code)

    def _wrap(
        self, handler: Callable[..., Any], *, action: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        """Identify the viewer, check admin and CSRF for actions, run ``handler`` in the thread pool."""
        from starlette.concurrency import run_in_threadpool

        async def endpoint(request: Request) -> Response:
            session = self._begin(request)
            viewer: Viewer | None = None
            try:
                viewer = identify(self.keys, request.headers.get("authorization"), session)
                if not self.keys.enabled and session is None:
                    self._start_session(request, None)  # keys off: the first page view gets one
                if not action:
                    return await run_in_threadpool(handler, request, viewer)
                form = await _read_form(request)
                if not viewer.admin:
                    raise Forbidden(f"Key {viewer.name!r} may look but not act: that needs an admin key.")
                if not viewer.via_header:
                    self._check_action(request, session, form)
                return await run_in_threadpool(handler, request, viewer, form)
            except Unauthorized as e:
                if action or request.headers.get("authorization"):
                    return self._error(request, None, e)
                return self._login_form(request, e.message, request.url.path, 401)
            except SmallfleetError as e:
                return self._error(request, viewer, e)
            except Exception as e:
                log.exception("dashboard page %s failed", request.url.path)
                err = SmallfleetError(f"The page failed ({type(e).__name__}); the gateway's log has details.")
                err.status_code = 500
                return self._error(request, viewer, err)

        return endpoint

    # ------------------------------------------------------------ pages

    def _overview(self, request: Request, viewer: Viewer) -> Response:
        from smallfleet.dashboard.charts import overview_charts
        from smallfleet.dashboard.queries import overview

        ov = overview(self.store.engine, request.query_params.get("range"), rollup=self.rollup)
        dropped = self.metrics.traces_dropped if self.metrics is not None else None
        body = self._render(
            "overview.html",
            request,
            viewer,
            page="overview",
            ov=ov,
            charts=overview_charts(ov),
            range=ov.range,
            dropped=dropped,
            ranges=_ranges(),
        )
        return self._respond(request, body)

    def _workloads(self, request: Request, viewer: Viewer) -> Response:
        from smallfleet.dashboard.charts import agreement_chart, cluster_share_chart
        from smallfleet.dashboard.queries import agreement_series, latest_clusters, parse_range

        name, span = parse_range(request.query_params.get("range", "30d"))
        import time

        since = None if span is None else time.time() - span
        workloads = latest_clusters(self.store.engine)
        active = {r.name: r for r in self.routes.active()}
        agreement = {name_: self.routes.agreement(name_) for name_ in active}
        x, series = agreement_series(self.store.engine, since)
        for w in workloads:
            w["chart"] = cluster_share_chart(w["clusters"]) if w["clusters"] else ""
        body = self._render(
            "workloads.html",
            request,
            viewer,
            page="workloads",
            workloads=workloads,
            active=active,
            agreement=agreement,
            agreement_chart=agreement_chart(x, series),
            range=name,
            ranges=_ranges(),
        )
        return self._respond(request, body)

    def _routes_page(self, request: Request, viewer: Viewer, message: str | None = None) -> Response:
        active = self.routes.active()
        info = {
            r.name: {
                "agreement": self.routes.agreement(r.name),
                "versions": len(self.routes.versions(r.name)),
                "fraction": r.mode.partition(":")[2] or "0.1",
            }
            for r in active
        }
        events = self.routes.events(limit=200)
        body = self._render(
            "routes.html",
            request,
            viewer,
            page="routes",
            active=active,
            info=info,
            events=events,
            message=message or request.query_params.get("done"),
        )
        return self._respond(request, body)

    def _set_mode(self, request: Request, viewer: Viewer, form: dict[str, str]) -> Response:
        name = request.path_params["name"]
        mode = form.get("mode", "").strip()
        if mode == "canary":
            mode = "canary:" + (form.get("fraction") or "0.1").strip()
        if not mode:
            raise UserError("Choose a mode: off, shadow, canary (with a fraction) or on.")
        route = self.routes.set_mode(name, mode, actor=viewer.name, reason="dashboard")
        return self._after_action(request, f"Route {name}: mode set to {route.mode} by {viewer.name}.")

    def _rollback(self, request: Request, viewer: Viewer, form: dict[str, str]) -> Response:
        name = request.path_params["name"]
        route = self.routes.rollback(name, actor=viewer.name)
        return self._after_action(
            request, f"Route {name}: rolled back to version {route.version} by {viewer.name}."
        )

    def _after_action(self, request: Request, message: str) -> Response:
        from starlette.responses import RedirectResponse

        # Post/redirect/get: a reload does not repeat the action.
        return RedirectResponse(f"{self.prefix}/routes?{urlencode({'done': message})}", status_code=303)

    def _traces(self, request: Request, viewer: Viewer) -> Response:
        import time

        from smallfleet.dashboard.queries import parse_range, small_route

        qp = request.query_params
        filters = {k: (qp.get(k) or "").strip() for k in ("workload", "model", "route", "status", "q")}
        range_name, span = parse_range(qp.get("range", "all"))
        cursor = _parse_cursor(qp.get("after"))
        rows = self.store.search_traces(
            text=filters["q"] or None,
            workload=filters["workload"] or None,
            model=filters["model"] or None,
            route=filters["route"] or None,
            status=filters["status"] or None,
            since=None if span is None else time.time() - span,
            limit=PAGE_SIZE + 1,
            cursor=cursor,
        )
        more = len(rows) > PAGE_SIZE
        rows = rows[:PAGE_SIZE]
        base = {k: v for k, v in filters.items() if v}
        base["range"] = range_name
        next_url = None
        if more:
            last = rows[-1]
            next_url = f"{self.prefix}/traces?" + urlencode(
                {**base, "after": f"{last.created_at!r}:{last.id}"}
            )
        body = self._render(
            "traces.html",
            request,
            viewer,
            page="traces",
            rows=rows,
            filters=filters,
            range=range_name,
            ranges=_ranges(),
            next_url=next_url,
            first_url=f"{self.prefix}/traces?" + urlencode(base) if cursor else None,
            small_route=small_route,
            preview=_preview,
        )
        return self._respond(request, body)

    def _trace(self, request: Request, viewer: Viewer) -> Response:
        trace_id = request.path_params["trace_id"]
        rec = self.store.get_trace(trace_id)
        if rec is None:
            err = UserError(f"No trace with id {trace_id!r}.")
            err.status_code = 404
            raise err
        body = self._render(
            "trace.html",
            request,
            viewer,
            page="traces",
            t=rec,
            request_json=json.dumps(rec.request, indent=2, ensure_ascii=False),
            response_json=json.dumps(rec.response, indent=2, ensure_ascii=False),
            feedback=self.store.get_feedback(trace_id),
        )
        return self._respond(request, body)

    def _report(self, request: Request, viewer: Viewer) -> Response:
        from smallfleet.flywheel.pipeline import latest_summary
        from smallfleet.report.html import render_report

        summary = latest_summary(self.store)
        if summary is None:
            body = self._render("noreport.html", request, viewer, page="report")
            return self._respond(request, body)
        page = render_report(summary)
        # The report is a standalone page: give it the dashboard's way back (and no favicon request).
        back = (
            f'<nav style="background:#111827;padding:8px 32px;font:14px system-ui,sans-serif">'
            f'<a href="{self.prefix}/" style="color:#93c5fd">« smallfleet dashboard</a></nav>'
        )
        page = page.replace("<head>", '<head><link rel="icon" href="data:,">', 1).replace(
            "<body>", "<body>" + back, 1
        )
        return self._respond(request, page)

    # ------------------------------------------------------------ login

    async def _login_page(self, request: Request) -> Response:
        from starlette.responses import RedirectResponse

        self._begin(request)
        if not self.keys.enabled:  # nothing to sign in to
            return RedirectResponse(self.prefix or "/", status_code=303)
        return self._login_form(request, None, self.prefix)

    async def _login(self, request: Request) -> Response:
        """Check the form's token and the key; then, and only then, issue a session naming the key."""
        from starlette.responses import RedirectResponse

        self._begin(request)
        form: dict[str, str] = {}
        try:
            form = await _read_form(request)
            if self.keys.enabled:
                self.sessions.check_login(request.cookies.get(LOGIN_COOKIE), form.get("csrf"))
                key = form.get("key", "").strip()
                if not key:
                    raise Unauthorized("Enter a gateway key.")
                self._start_session(request, self.keys.authenticate("Bearer " + key))
                request.state.cookies[LOGIN_COOKIE] = None
        except SmallfleetError as e:
            return self._login_form(request, e.message, self._next(form.get("next")), e.status_code)
        resp = RedirectResponse(self._next(form.get("next")), status_code=303)
        self._set_cookies(request, resp)
        return resp

    def _next(self, target: str | None) -> str:
        """Where to go after signing in: a dashboard path, never an open redirect."""
        if target and (target == self.prefix or target.startswith(self.prefix + "/")):
            return target
        return self.prefix or "/"

    async def _logout(self, request: Request) -> Response:
        from starlette.responses import PlainTextResponse, RedirectResponse

        session = self._begin(request)
        try:
            self.sessions.check_csrf(session, (await _read_form(request)).get("csrf"))
        except UserError as e:
            return PlainTextResponse(e.message, status_code=e.status_code)
        # Sessions are signed, not stored: signing out drops the cookie; the value itself lasts
        # until its expiry or its key's removal.
        request.state.cookies[SESSION_COOKIE] = None
        resp = RedirectResponse(self.prefix + "/login", status_code=303)
        self._set_cookies(request, resp)
        return resp

    async def _static(self, request: Request) -> Response:
        from starlette.responses import PlainTextResponse, Response

        name = request.path_params["file"]
        suffix = name[name.rfind(".") :] if "." in name else ""
        ctype = _STATIC_TYPES.get(suffix)
        files = resources.files("smallfleet.dashboard") / "static"
        if ctype is None or "/" in name or name.startswith(".") or not (files / name).is_file():
            return PlainTextResponse("Not found.", status_code=404)
        return Response(
            (files / name).read_bytes(), media_type=ctype, headers={"cache-control": "max-age=300"}
        )


# ---------------------------------------------------------------- helpers


def _ranges() -> list[str]:
    from smallfleet.dashboard.queries import RANGES

    return list(RANGES)


async def _read_form(request: Request) -> dict[str, str]:
    """An urlencoded form (no multipart dependency), first value of each field."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_FORM:
            raise UserError("The form is too large.")
    try:
        parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=50)
    except (UnicodeDecodeError, ValueError):
        raise UserError("The form could not be read (expected application/x-www-form-urlencoded).") from None
    return {k: v[0] for k, v in parsed.items()}


def _parse_cursor(raw: str | None) -> tuple[float, str] | None:
    """``after=<created_at>:<id>`` of the last row of the previous page."""
    if not raw:
        return None
    ts, sep, trace_id = raw.partition(":")
    try:
        t = float(ts)
    except ValueError:
        t = float("nan")
    if not sep or not trace_id or t != t:
        raise UserError(f"The page cursor {raw!r} is not <time>:<trace id>; start from the first page.")
    return t, trace_id


def _preview(rec: Any, n: int = 90) -> str:
    """The last user message of a trace, shortened, for the list."""
    req = rec.request if isinstance(rec.request, dict) else {}
    text = ""
    for m in reversed(req.get("messages") or []):
        if isinstance(m, dict) and m.get("role") == "user":
            c = m.get("content")
            text = c if isinstance(c, str) else json.dumps(c, ensure_ascii=False)
            break
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _process_secret() -> bytes:
    log.warning(
        "gateway.session_secret is not set: dashboard sessions and forms are signed with a random "
        "secret of this process, so they end when it restarts and fail across replicas "
        "(set SMALLFLEET_GATEWAY__SESSION_SECRET to the same value on every replica)."
    )
    return secrets.token_bytes(32)


def create_dashboard(
    store: TraceStore,
    keys: KeyRing | None = None,
    *,
    metrics: Metrics | None = None,
    prefix: str = "/ui",
    session_secret: str | None = None,
) -> Dashboard:
    """The dashboard app over ``store``; ``keys`` as the gateway's (none: open to anyone who can reach it).

    ``session_secret`` signs sessions and CSRF tokens (``gateway.session_secret``); give every replica
    the same one. None: a random one for this process.
    """
    from smallfleet.gateway.auth import KeyRing

    return Dashboard(
        store,
        keys if keys is not None else KeyRing([]),
        metrics=metrics,
        prefix=prefix,
        session_secret=session_secret,
    )
