"""Redaction: nothing seeded reaches the database file; placeholders are typed, numbered and stable."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from smallfleet.config import RedactionConfig
from smallfleet.errors import ConfigError
from smallfleet.store import Redactor, TraceRecord, TraceStore
from smallfleet.store.redact import iban_valid, luhn_valid

SEEDS = {
    "email": ["bob.smith@example.com", "alice+tag@mail.example.co.uk", "ops@corp-internal.io"],
    "card": [
        "4111111111111111",
        "5555 5555 5555 4444",
        "3782-822463-10005",
        "6011111111111117",
        "3530111333300000",
    ],
    "iban": ["GB82WEST12345698765432", "DE89 3704 0044 0532 0130 00", "FR1420041010050500013M02606"],
    "phone": ["+1 (415) 555-0132", "415-555-0199", "+44 20 7946 0958", "+4915112345678", "(212) 555-0100"],
    "ip": ["203.0.113.42", "2001:db8::8a2e:370:7334", "fe80::1ff:fe23:4567:890a"],
    "secret": [
        "sk-proj-AbCdEf1234567890GhIjKlMnOp",
        "sk-ant-api03-QwErTy1234567890AsDfGh",
        "AKIAIOSFODNN7EXAMPLE",
        "9f8e7d6c5b4a39281706abcdef",  # a bearer token
        "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7",  # inside a PEM block
        "ZXhhbXBsZXNlY3JldA",  # api_key=...
        "hunter2hunter2",  # password: ...
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    ],
    "user": ["EMP-123456", "EMP-654321"],
}

PEM = (
    "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n"
    "kJ8Lr0y4Zq\n-----END PRIVATE KEY-----"
)

# Things that look like numbers or ids but are not personal data: must survive untouched.
KEEP = [
    "order 1234567812345678",
    "4111111111111112",  # fails Luhn
    "ref 98765432109876",
    "2024-01-15 10:30:45",
    "v1.2.3",
    "$1,234.56",
    "INV-2024-000123",
    "550e8400-e29b-41d4-a716-446655440000",
    "ISBN 978-3-16-148410-0",
    "DE89370400440532013001",  # IBAN with a wrong check
    "tracking 1Z999AA10123456784",
]


def _corpus() -> list[TraceRecord]:
    s = SEEDS
    records = []
    req = {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": f"Internal host {s['ip'][0]}; key {s['secret'][0]}"},
            {
                "role": "user",
                "content": f"I am {s['email'][0]}, call me on {s['phone'][0]} or {s['phone'][1]}. "
                f"Card {s['card'][0]}, IBAN {s['iban'][0]}. Employee {s['user'][0]}. " + " | ".join(KEEP),
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {
                            "name": "refund",
                            "arguments": json.dumps(
                                {"email": s["email"][1], "card": s["card"][1], "amount": 12.5, "n": 4}
                            ),
                        },
                    }
                ],
            },
            {
                "role": "tool",
                "tool_call_id": "call_1",
                "content": f"done for {s['iban'][1]} from {s['ip'][1]}",
            },
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": f"Headers: Authorization: Bearer {s['secret'][3]}\n{PEM}"},
                    {"type": "text", "text": f"config: api_key={s['secret'][5]} password: {s['secret'][6]}"},
                ],
            },
        ],
        "metadata": {"caller": s["email"][2], "host": s["ip"][2]},
    }
    resp = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": f"Thanks {s['email'][0]}, refunded card {s['card'][2]} and {s['card'][3]}, "
                    f"also {s['card'][4]}; IBAN {s['iban'][2]}; phones {s['phone'][2]}, {s['phone'][3]}, "
                    f"{s['phone'][4]}; keys {s['secret'][1]} {s['secret'][2]} {s['secret'][7]}; "
                    f"{s['user'][1]}",
                    "tool_calls": [
                        {
                            "id": "call_2",
                            "type": "function",
                            "function": {"name": "notify", "arguments": json.dumps({"to": s["email"][0]})},
                        }
                    ],
                },
                "finish_reason": "stop",
            }
        ],
    }
    records.append(TraceRecord(id="seeded", request=req, response=resp, metadata={"who": s["email"][0]}))
    return records


@pytest.fixture(scope="module")
def redactor() -> Redactor:
    return Redactor(RedactionConfig(patterns={"EMPLOYEE": r"EMP-\d{6}"}))


def _raw_bytes(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))


def test_no_seeded_string_reaches_the_database_file(tmp_path: Path, redactor: Redactor) -> None:
    db = tmp_path / "traces.db"
    store = TraceStore(f"sqlite:///{db}")
    corpus = _corpus()
    original = copy.deepcopy(corpus[0].request)
    redacted = [redactor.redact_record(r) for r in corpus]
    assert corpus[0].request == original  # the caller's (upstream's) copy is untouched
    canary = TraceRecord(id="canary", request={"messages": [{"role": "user", "content": "canary-Zq81x"}]})
    store.write_traces([*redacted, canary])
    seeds = [v for values in SEEDS.values() for v in values]
    for raw in (_raw_bytes(db), None):
        if raw is None:  # again after close, once the WAL is checkpointed into the main file
            store.close()
            raw = _raw_bytes(db)
        assert b"canary-Zq81x" in raw  # the grep does see what is stored
        found = [s for s in seeds if s.encode() in raw]
        assert found == []
        # Cards and IBANs also not in their compact form.
        for s in SEEDS["card"] + SEEDS["iban"]:
            assert s.replace(" ", "").replace("-", "").encode() not in raw
    # What must stay, stays.
    text = json.dumps(redacted[0].request)
    for keep in KEEP:
        assert keep.replace('"', '\\"') in text, keep


def test_placeholders_typed_numbered_and_stable(redactor: Redactor) -> None:
    rec = redactor.redact_record(_corpus()[0])
    req, resp = json.dumps(rec.request), json.dumps(rec.response)
    user = rec.request["messages"][1]["content"]  # type: ignore[index]
    assert user.startswith("I am <EMAIL_1>, call me on <PHONE_1> or <PHONE_2>. Card <CARD_1>, IBAN <IBAN_1>.")
    assert "Employee <EMPLOYEE_1>." in user
    # The same e-mail in the response and in the record metadata: the same placeholder.
    assert resp.count("<EMAIL_1>") == 2 and rec.metadata == {"who": "<EMAIL_1>"}
    assert "<EMPLOYEE_2>" in resp
    for label in ("EMAIL", "CARD", "IBAN", "PHONE", "IP", "SECRET"):
        assert f"<{label}_1>" in req + resp
    assert "<CARD_5>" in resp and "<CARD_6>" not in resp
    assert "<IBAN_3>" in resp and "<PHONE_5>" in resp
    assert "Bearer <SECRET_" in req
    assert "api_key=<SECRET_" in req and "password: <SECRET_" in req


def test_tool_call_arguments_stay_valid_json(redactor: Redactor) -> None:
    rec = redactor.redact_record(_corpus()[0])
    args = rec.request["messages"][2]["tool_calls"][0]["function"]["arguments"]  # type: ignore[index]
    parsed = json.loads(args)
    assert parsed == {"email": "<EMAIL_2>", "card": "<CARD_2>", "amount": 12.5, "n": 4}
    out = rec.response["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]  # type: ignore[index]
    assert json.loads(out) == {"to": "<EMAIL_1>"}
    # Arguments with nothing to redact are kept byte for byte.
    plain = '{"city":  "Paris"}'
    r, _ = redactor.redact_trace({"a": plain}, None)
    assert r["a"] == plain


def test_same_value_in_other_formats_gets_same_placeholder(redactor: Redactor) -> None:
    req, resp = redactor.redact_trace(
        {"c": "card 4111 1111 1111 1111, mail Bob@Example.com"},
        {"c": "card 4111-1111-1111-1111 and 4111111111111111, mail bob@example.com"},
    )
    assert req["c"] == "card <CARD_1>, mail <EMAIL_1>"
    assert resp["c"] == "card <CARD_1> and <CARD_1>, mail <EMAIL_1>"  # type: ignore[index]
    # A new trace starts numbering again.
    again, _ = redactor.redact_trace({"c": "x 5555555555554444"}, None)
    assert again["c"] == "x <CARD_1>"


def test_card_number_sent_as_a_json_number(redactor: Redactor) -> None:
    r, _ = redactor.redact_trace({"card": 4111111111111111, "count": 1234567890123, "n": 3}, None)
    assert r == {"card": "<CARD_1>", "count": 1234567890123, "n": 3}


def test_config_kinds_disabled_and_errors() -> None:
    only_email = Redactor(RedactionConfig(kinds=["email"]))
    assert only_email.redact_text("a@b.com 4111111111111111") == "<EMAIL_1> 4111111111111111"
    off = Redactor(RedactionConfig(enabled=False))
    req = {"c": "a@b.com"}
    assert off.redact_trace(req, None) == (req, None)
    with pytest.raises(ConfigError, match="unknown kind"):
        Redactor(RedactionConfig(kinds=["emails"]))
    with pytest.raises(ConfigError, match="not a valid regular expression"):
        Redactor(RedactionConfig(patterns={"BAD": "("}))
    with pytest.raises(ConfigError, match="placeholder name"):
        Redactor(RedactionConfig(patterns={"bad name": "x"}))


def test_user_pattern_value_group() -> None:
    r = Redactor(RedactionConfig(patterns={"ticket": r"ticket #(?P<value>\d{5})"}))
    assert (
        r.redact_text("see ticket #12345 and ticket #12345")
        == "see ticket #<TICKET_1> and ticket #<TICKET_1>"
    )


def test_checksums() -> None:
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert iban_valid("GB82 WEST 1234 5698 7654 32") and not iban_valid("GB83WEST12345698765432")
    assert not iban_valid("GB82WEST1234569876543!")
