"""A seeded-secret corpus through every path of the real gateway: no seed reaches a stored byte or a log line.

Every seed (API keys of several vendors, PEM blocks, JWTs, bearer tokens, cards,
IBANs, e-mails, phones, IPs, SSNs, values of fields named like secrets) is sent
over real HTTP through: request message contents, multi-part content, tool
definitions, tool-call arguments and tool results in the request, metadata and
``user``, the upstream's echo (plain, streamed, tool-call arguments plain and
streamed), upstream 4xx and 5xx error bodies that echo the request (plain and
streamed), validation errors (an invalid role, a model name, a metadata key),
bodies that are not JSON, and the ``x-smallfleet-workload`` header. Then the raw
bytes of the SQLite file and its WAL (while the gateway runs and after it
stopped), every row of every table of the PostgreSQL schema as text, the
captured log (DEBUG, every logger) and the dead-letter file are searched for
every seed.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from gwkit import Running, model_cfg

from smallfleet.config import load_settings
from smallfleet.gateway.app import create_app
from smallfleet.gateway.server import BackgroundServer
from smallfleet.store.trace_store import TraceStore
from smallfleet.testing import Reply, ScriptedUpstream
from smallfleet.types import ChatResponse, Usage


@dataclass(frozen=True)
class Seed:
    kind: str
    text: str  # what is sent
    needles: tuple[str, ...] = ()  # what must not be found (default: the text itself)

    def all_needles(self) -> tuple[str, ...]:
        return self.needles or (self.text,)


def _pem(label: str, lines: list[str]) -> Seed:
    body = "\n".join(lines)
    return Seed("pem", f"-----BEGIN {label}-----\n{body}\n-----END {label}-----", tuple(lines))


def _compact(kind: str, text: str) -> Seed:
    return Seed(kind, text, (text, text.replace(" ", "").replace("-", "")))


#: Values of fields named like secrets: short and shapeless, caught by the field's name alone.
FIELDS: dict[str, Any] = {
    "password": "hx7Q2",
    "token": "t0kZ9",
    "api_key": "k3yW8v",
    "db_password": 7319468205,
    "X-Api-Key": "q9Lm",
    "client_secret": "cs_Rt5Pz",
    "access_token": "at_Yu6Jq",
    "refresh_token": "rt_Ko8Hn",
    "private_key": "pk_Vb2Xc",
    "credentials": "Cr3d_Nw4",
    "pwd": "pW_3kT",
    "apikey": "ak_Zm7Ls",
}

SEEDS: list[Seed] = [
    # API keys and tokens of several vendors
    Seed("openai", "sk-proj-Q7xWv2Lk9TfB3nRz8YpHd4Jm6SaE1uCo0GiKqNw5"),
    Seed("openai", "sk-5Hc8Vn2Qr7Lx1Tz9Wk4Mb6Yd3Fs0Gj8Pa2Ne7Ru5Ko1Xi3Zt"),
    Seed("anthropic", "sk-ant-api03-Zx8Cv7Bn6Mq5Wl4Ek3Rt2Yu1Io0PaSdFgHjKl"),
    Seed("aws", "AKIAQ3EGRJ7SXN5LTV2K"),
    Seed("aws", "ASIAY34FZKBOKMUTVV7A"),
    Seed("github", "ghp_R8sT2uV4wX6yZ8aB0cD2eF4gH6iJ8kL0mN2o"),
    Seed("github", "github_pat_11AQX7Y2I0kLmNoPqRsTuV_wXyZaBcDeFgHiJkLmNoPqRsTuVwXyZaBcDeFgHiJk"),
    Seed("slack", "xoxb-2048613579-4096123456789-Qm3Nw8Ep5Rt1Yu7Io2Pa"),
    Seed("google", "AIzaSyD4kLm9NpQ2rS7tU1vW5xY8zA3bC6dE0fG"),
    Seed(
        "bearer",
        "Authorization: Bearer 7f3a9c2e1b4d8f6a0c5e9b3d7f1a2c4e",
        ("7f3a9c2e1b4d8f6a0c5e9b3d7f1a2c4e",),
    ),
    Seed("bearer", "curl -H 'Authorization: Bearer mF_9.B5f-4.1JqMzT'", ("mF_9.B5f-4.1JqMzT",)),
    Seed(
        "jwt",
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VyLTQyIiwicm9sZSI6ImFkbWluIn0."
        "Kq8Zx3Vb7Nm2Lp5Rt9Ws4Yd1Fg6Hj0Qa8Ue3Io7Pk",
    ),
    Seed(
        "jwt",
        "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJodHRwczovL2F1dGguZXhhbXBsZSIsImV4cCI6MTcwMDAwMDAwMH0."
        "Tm5Xn2Bq8Wr4Yz6Lc1Vd9Hf3Jg7Ks0Pa5Qe2Ro8Sk",
    ),
    Seed("assignment", "api_key=ZXhhbXBsZVNlY3JldEtleTQy", ("ZXhhbXBsZVNlY3JldEtleTQy",)),
    Seed("assignment", "secret_key: Wm9vbGFuZEdpbW1lU2VjcmV0", ("Wm9vbGFuZEdpbW1lU2VjcmV0",)),
    Seed("assignment", "password=Tr0ub4dor&3xyz", ("Tr0ub4dor&3xyz",)),
    Seed("assignment", "Authorization: Basic dXNlcjpodW50ZXIyaHVudGVy", ("dXNlcjpodW50ZXIyaHVudGVy",)),
    _pem(
        "RSA PRIVATE KEY",
        [
            "MIIEowIBAAKCAQEA7xZqR3vN8kLm2PqS9tUwXyZaBcDeFgHiJkLmNoPqRsTu",
            "Vw2Xy4Za6Bc8De0Fg2Hi4Jk6Lm8No0PqRs",
        ],
    ),
    _pem("EC PRIVATE KEY", ["MHcCAQEEIBkZ3x7Yq9Lm4Np2Rs8Tu6Vw1Xy3Za5Bc7De9Fg0HiJoAoGCCqGSM49"]),
    _pem("OPENSSH PRIVATE KEY", ["b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW"]),
    _pem("PRIVATE KEY", ["MIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQDQx9Lm3Np"]),
    # payment cards (valid Luhn), with and without separators
    _compact("card", "4111 1111 1111 1111"),
    _compact("card", "4012888888881881"),
    _compact("card", "5555-5555-5555-4444"),
    _compact("card", "2223003122003222"),
    _compact("card", "3782 822463 10005"),
    _compact("card", "6011000990139424"),
    _compact("card", "3530111333300000"),
    _compact("card", "30569309025904"),
    # IBANs (valid mod-97)
    _compact("iban", "GB82 WEST 1234 5698 7654 32"),
    _compact("iban", "DE89370400440532013000"),
    _compact("iban", "FR1420041010050500013M02606"),
    _compact("iban", "NL91 ABNA 0417 1643 00"),
    _compact("iban", "ES9121000418450200051332"),
    _compact("iban", "CH9300762011623852957"),
    # e-mails
    Seed("email", "margaret.hamilton@apollo-guidance.example"),
    Seed("email", "j.doe+billing@mail.example.co.uk"),
    Seed("email", "ops-oncall@corp-internal.example.io"),
    # phones
    Seed("phone", "+1 (415) 555-0132"),
    Seed("phone", "(212) 555-0187"),
    Seed("phone", "+44 20 7946 0958"),
    Seed("phone", "+4915112345678"),
    Seed("phone", "646.555.0143"),
    # IP addresses
    Seed("ip", "203.0.113.42"),
    Seed("ip", "198.51.100.77"),
    Seed("ip", "2001:db8:85a3::8a2e:370:7334"),
    Seed("ip", "fe80::1ff:fe23:4567:890a"),
    # US social security numbers
    _compact("ssn", "219-09-9999"),
    _compact("ssn", "457 55 5462"),
    Seed("ssn", "SSN: 536225874", ("536225874",)),
    Seed("ssn", "social security number 078051120", ("078051120",)),
    # values of fields named like secrets, in JSON text (their dict form travels in FIELDS)
    *(Seed("field", json.dumps({k: v}), (str(v),)) for k, v in FIELDS.items()),
]

#: Everything as one text; items separated by a word, so no two seeds touch.
CORPUS = "\n".join(f"item: {s.text}" for s in SEEDS)
CANARY = "canary-Zq81xPl"  # stored as it is: proves the search sees what is stored
SINGLE_LINE = [s for s in SEEDS if "\n" not in s.text and len(s.text) <= 150]


#: Long secrets an error snippet or a label may cut short, and how much of each (its generic start
#: and six characters more) must not survive the cut.
CUT: list[tuple[Seed, str]] = [
    (seed, seed.text[: len(start) + 6])
    for seed in SEEDS
    for start in ("sk-proj-", "xoxb-", "github_pat_", "AIza", "eyJ", "-----BEGIN RSA PRIVATE KEY-----\n")
    if seed.text.startswith(start)
]


def _needles() -> list[str]:
    return sorted({n for s in SEEDS for n in s.all_needles()} | {needle for _, needle in CUT})


# ---------------------------------------------------------------- the upstream


def _respond(request: dict[str, Any]) -> Reply:
    """What the scripted upstream does, chosen by a tag in the request's last message."""
    last = json.dumps(request.get("messages", [])[-1:])
    stream = bool(request.get("stream"))
    if "[[reject]]" in last:  # a 4xx that echoes the request, as some providers do
        message = f"Invalid request (you sent {json.dumps(request)})"
        return Reply(status=400, body={"error": {"message": message, "type": "invalid_request_error"}})
    cut = re.search(r"\[\[cut (\d+) (\d+)\]\]", last)
    if cut:  # the seed again and again: wherever the gateway cuts the body short, it cuts one
        seed, pad = CUT[int(cut[1])][0], int(cut[2])
        message = "p" * pad + " " + " ".join([seed.text] * 40)
        return Reply(status=400, body={"error": {"message": message, "type": "invalid_request_error"}})
    if "[[fail]]" in last:
        return Reply(status=500, body={"error": {"message": f"crashed on {json.dumps(request)}"}})
    if "[[tool]]" in last:
        resp = ChatResponse.of_tool_calls(
            "upstream", [("lookup", {**FIELDS, "note": CORPUS})], Usage.of(9, 9)
        )
    else:
        resp = ChatResponse.of_text("upstream", f"You said: {CORPUS}", Usage.of(9, 9))
    return Reply.stream(resp, piece=7) if stream else Reply.of(resp)


# ---------------------------------------------------------------- the requests


def _chat_request(tag: str, **extra: Any) -> dict[str, Any]:
    """A request carrying the whole corpus in every part a client can fill."""
    args = json.dumps({**FIELDS, "query": CORPUS})
    result = json.dumps({"status": "ok", **FIELDS, "rows": [CORPUS]})
    return {
        "model": "big",
        "messages": [
            {"role": "system", "content": f"Context: {CORPUS}"},
            {"role": "user", "content": [{"type": "text", "text": CORPUS}, {"type": "text", "text": CANARY}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": args}}
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": result},
            {"role": "user", "content": f"{tag} {CORPUS}"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "lookup",
                    "description": f"Looks things up. Example: {CORPUS}",
                    "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
                },
            }
        ],
        "metadata": {k: str(v) for k, v in FIELDS.items()} | {"note": CORPUS},
        "user": next(s.text for s in SEEDS if s.kind == "email"),
        **extra,
    }


def _send_everything(gw: Running) -> None:
    client = gw.client()
    http = httpx.Client(base_url=gw.server.base, timeout=15)
    headers = {"x-smallfleet-workload": "margaret.hamilton@apollo-guidance.example"}
    try:
        _through_the_sdk(client, headers)
        _errors_from_upstream(http, headers)
        _cut_short(http)
        _validation_errors(http)
    finally:
        http.close()
        client.close()


def _through_the_sdk(client: Any, headers: dict[str, str]) -> None:
    """Plain, streamed and tool-call answers through the official SDK (its debug log included)."""
    for tag in ("[[echo]]", "[[tool]]"):
        body = _chat_request(tag)
        model, messages = body.pop("model"), body.pop("messages")
        out = client.chat.completions.create(model=model, messages=messages, extra_headers=headers, **body)
        assert out.choices[0].message.content or out.choices[0].message.tool_calls
        stream = client.chat.completions.create(
            model=model, messages=messages, stream=True, extra_headers=headers, **body
        )
        assert list(stream)


def _errors_from_upstream(http: httpx.Client, headers: dict[str, str]) -> None:
    for tag, stream in (("[[reject]]", False), ("[[reject]]", True), ("[[fail]]", False), ("[[fail]]", True)):
        r = http.post("/v1/chat/completions", json=_chat_request(tag, stream=stream), headers=headers)
        assert r.status_code >= 400, (tag, stream, r.status_code, r.text[:300])


def _cut_short(http: httpx.Client) -> None:
    """Upstream error bodies full of one long secret, at three offsets: the stored snippet cuts one."""
    for i, (seed, _) in enumerate(CUT):
        for pad in (0, len(seed.text) // 3, 2 * len(seed.text) // 3):
            body = {"model": "big", "messages": [{"role": "user", "content": f"[[cut {i} {pad}]]"}]}
            assert http.post("/v1/chat/completions", json=body).status_code == 400
    label = " ".join(seed.text for seed, _ in CUT if "\n" not in seed.text)  # stored cut to the label limit
    body = {"model": label, "messages": [{"role": "user", "content": "hi"}]}
    r = http.post("/v1/chat/completions", json=body, headers={"x-smallfleet-workload": label})
    assert 400 <= r.status_code < 500, r.text[:300]


def _validation_errors(http: httpx.Client) -> None:
    """Seeds in places a validation error echoes: a role, a model name, a metadata key, the workload."""
    for seed in SINGLE_LINE:
        bad_role = {"model": "big", "messages": [{"role": seed.text, "content": "hi"}]}
        r = http.post("/v1/chat/completions", json=bad_role)
        assert r.status_code == 400, r.text[:300]
        unknown_model = {"model": seed.text, "messages": [{"role": "user", "content": "hi"}]}
        r = http.post(
            "/v1/chat/completions", json=unknown_model, headers={"x-smallfleet-workload": seed.text}
        )
        assert 400 <= r.status_code < 500, r.text[:300]
    bad_meta = {
        "model": "big",
        "messages": [{"role": "user", "content": "hi"}],
        "metadata": {SEEDS[0].text: 1},
    }
    assert http.post("/v1/chat/completions", json=bad_meta).status_code == 400
    bad_type = {"model": "big", "messages": [{"role": "user", "content": "hi"}], "temperature": CORPUS}
    assert http.post("/v1/chat/completions", json=bad_type).status_code == 400
    not_json = f'{{"model": "big", "messages": [{{"role": "user", "content": {CORPUS!r}'.encode()
    r = http.post("/v1/chat/completions", content=not_json, headers={"content-type": "application/json"})
    assert r.status_code == 400
    r = http.post("/v1/chat/completions", content=CORPUS.encode(), headers={"content-type": "text/plain"})
    assert 400 <= r.status_code < 500


# ---------------------------------------------------------------- where to look


def _sqlite_bytes(db: Path) -> bytes:
    """The database file and its -wal and -shm companions, as they are on disk now."""
    return b"".join(p.read_bytes() for p in sorted(db.parent.glob(db.name + "*")))


def _pg_rows(url: str) -> tuple[str, bytes]:
    """The test's schema, and every row of every table in it as PostgreSQL prints it."""
    import sqlalchemy as sa

    eng = sa.create_engine(url)
    out: list[str] = []
    try:
        with eng.connect() as conn:
            schema = conn.execute(sa.text("SELECT current_schema()")).scalar_one()
            tables = conn.execute(
                sa.text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
            ).scalars()
            for table in list(tables):
                rows = conn.execute(sa.text(f'SELECT t::text FROM "{table}" t')).scalars()
                out += [table, *rows]
    finally:
        eng.dispose()
    return schema, "\n".join(out).encode()


def _pg_dump(url: str, schema: str) -> bytes:
    """``pg_dump --data-only`` of the schema, when a pg_dump that can read this server is installed."""
    import sqlalchemy as sa

    exe = shutil.which("pg_dump")
    if exe is None:
        return b""
    u = sa.make_url(url)
    env = {**os.environ, "PGPASSWORD": u.password or ""}
    args = [exe, "--data-only", f"--schema={schema}", "-h", u.host or "127.0.0.1", "-p", str(u.port or 5432)]
    args += ["-U", u.username or "postgres", "-d", u.database or "postgres"]
    done = subprocess.run(args, capture_output=True, env=env, timeout=60, check=False)
    return done.stdout if done.returncode == 0 else b""


def _log_text(caplog: pytest.LogCaptureFixture) -> str:
    """What the log handlers printed, and each record's message, traceback and stack."""
    parts = [caplog.text]
    for r in caplog.records:
        parts += [r.getMessage(), r.exc_text or "", r.stack_info or ""]
    return "\n".join(parts)


def _found(haystack: bytes, where: str) -> list[str]:
    return [f"{where}: {n}" for n in _needles() if n.encode() in haystack]


@pytest.fixture
def captured(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """caplog at DEBUG on every logger, uvicorn's too (they do not propagate to the root logger)."""
    caplog.set_level(logging.DEBUG)
    uvicorn = logging.getLogger("uvicorn")
    uvicorn.addHandler(caplog.handler)
    try:
        yield caplog
    finally:
        uvicorn.removeHandler(caplog.handler)


@contextmanager
def _gateway(url: str, upstream: ScriptedUpstream, tmp: Path) -> Iterator[Running]:
    overrides = {
        "store": {"url": url},
        "models": {"big": model_cfg(upstream.url)},
        "gateway": {"flush_interval_ms": 20, "dead_letter_path": str(tmp / "dead-letters.jsonl")},
    }
    settings = load_settings(env={}, overrides=overrides)
    store = TraceStore(url)
    app = create_app(settings, store=store)
    server = BackgroundServer(app).start()
    try:
        yield Running(app, server, store)
    finally:
        server.stop()  # the lifespan shutdown drains the recorder
        store.close()


# ---------------------------------------------------------------- the test


def test_corpus_is_what_the_docs_promise() -> None:
    kinds = {s.kind for s in SEEDS}
    assert len(SEEDS) >= 50
    assert kinds >= {"openai", "anthropic", "aws", "github", "slack", "google", "bearer", "jwt", "pem"}
    assert kinds >= {"card", "iban", "email", "phone", "ip", "ssn", "field", "assignment"}
    assert len(SINGLE_LINE) >= 45
    assert len(CUT) >= 6


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def _store_url(backend: str, db: Path, request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue("pg_schema") if backend == "postgres" else f"sqlite:///{db}"


def _stored_leaks(backend: str, url: str, db: Path, when: str) -> list[str]:
    """Seeds found in what the store holds: the SQLite files, or PostgreSQL's rows and pg_dump."""
    if backend == "sqlite":
        raw = _sqlite_bytes(db)
        assert CANARY.encode() in raw  # the search does see what is stored
        return _found(raw, f"sqlite {when}")
    schema, rows = _pg_rows(url)
    assert CANARY.encode() in rows
    dump = _pg_dump(url, schema)
    assert not dump or CANARY.encode() in dump
    return _found(rows, "postgres rows") + _found(dump, "pg_dump")


def _logged_leaks(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> list[str]:
    """Seeds found in the captured log and the dead-letter file."""
    assert caplog.records  # the log was captured
    found = _found(_log_text(caplog).encode(), "log")
    dead = tmp_path / "dead-letters.jsonl"
    return found + (_found(dead.read_bytes(), "dead letters") if dead.exists() else [])


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_seeded_secret_is_stored_or_logged(
    backend: str, tmp_path: Path, captured: pytest.LogCaptureFixture, request: pytest.FixtureRequest
) -> None:
    db = tmp_path / "traces.db"
    url = _store_url(backend, db, request)
    found: list[str] = []
    with ScriptedUpstream(_respond) as upstream, _gateway(url, upstream, tmp_path) as gw:
        _send_everything(gw)
        traces = gw.traces()  # flushed
        assert any(CANARY in json.dumps(t.request) for t in traces)
        assert upstream.requests and CANARY in json.dumps(upstream.requests[0])  # upstream got it all
        if backend == "sqlite":
            found += _stored_leaks(backend, url, db, "while running")
    found += _stored_leaks(backend, url, db, "after stop")  # SQLite: the WAL checkpointed into the file
    found += _logged_leaks(captured, tmp_path)
    assert found == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_seeded_secret_is_stored_from_feedback(
    backend: str, tmp_path: Path, captured: pytest.LogCaptureFixture, request: pytest.FixtureRequest
) -> None:
    """A feedback comment is stored too (the feedback table): it passes the redactor like the rest."""
    db = tmp_path / "traces.db"
    url = _store_url(backend, db, request)
    with ScriptedUpstream(_respond) as upstream, _gateway(url, upstream, tmp_path) as gw:
        http = httpx.Client(base_url=gw.server.base, timeout=15)
        chat = {"model": "big", "messages": [{"role": "user", "content": f"[[echo]] {CANARY}"}]}
        trace_id = http.post("/v1/chat/completions", json=chat).headers["x-smallfleet-trace-id"]
        feedback = {"trace_id": trace_id, "score": -1, "comment": f"wrong, it leaked {CORPUS}"}
        assert http.post("/v1/feedback", json=feedback).status_code == 200
        http.close()
        gw.traces()
    assert _stored_leaks(backend, url, db, "after stop") + _logged_leaks(captured, tmp_path) == []
