"""Redaction: nothing seeded reaches the database file; placeholders are typed, numbered and stable."""

from __future__ import annotations

import copy
import json
import logging
import re
import string
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smallfleet.config import RedactionConfig
from smallfleet.errors import ConfigError
from smallfleet.store import Redactor, TraceRecord, TraceStore
from smallfleet.store.redact import (
    iban_valid,
    install_log_redaction,
    luhn_valid,
    secret_field,
    ssn_valid,
    uninstall_log_redaction,
)

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


# ---------------------------------------------------------------- social security numbers


def test_ssn_shapes_and_keyword() -> None:
    r = Redactor()
    out = r.redact_text(
        "SSN 123-45-6789, again 123 45 6789; ssn: 123456789; Social Security Number is 078051120"
    )
    assert out == "SSN <SSN_1>, again <SSN_1>; ssn: <SSN_1>; Social Security Number is <SSN_2>"
    # JSON inside a string (an echo of a request in an error message)
    assert r.redact_text('{\\"ssn\\": \\"219099999\\"}') == '{\\"ssn\\": \\"<SSN_1>\\"}'


@pytest.mark.parametrize(
    "text",
    [
        "000-12-3456",  # area 000
        "666-12-3456",  # area 666
        "900-12-3456",  # area 9xx
        "999 12 3456",
        "123-00-4567",  # group 00
        "123-45-0000",  # serial 0000
        "123456789",  # nine digits without a keyword
        "order 123456789 shipped",
        "123-45 6789",  # mixed separators
        "2024-01-15",
        "12-34-5678",
        "INV-123-45-6789",
        "123-45-6789-01",
        "call 415-555-0132",
        "SSN: 000123456",
    ],
)
def test_ssn_refuses_what_cannot_be_one(text: str) -> None:
    r = Redactor(RedactionConfig(kinds=["ssn"]))
    assert r.redact_text(text) == text


def test_ssn_kind_is_configurable_and_checked() -> None:
    assert (
        Redactor(RedactionConfig(kinds=["ssn"])).redact_text("id 123-45-6789 a@b.com") == "id <SSN_1> a@b.com"
    )
    assert Redactor(RedactionConfig(kinds=["email"])).redact_text("id 123-45-6789") == "id 123-45-6789"
    assert ssn_valid("123 45 6789") and not ssn_valid("666-45-6789") and not ssn_valid("12345678")


def test_ssn_in_fields_named_ssn() -> None:
    r = Redactor()
    red, _ = r.redact_trace(
        {"ssn": "123456789", "employee_ssn": 123456789, "socialSecurityNumber": "123-45-6789", "ssn_n": 9},
        None,
    )
    assert red == {"ssn": "<SSN_1>", "employee_ssn": "<SSN_1>", "socialSecurityNumber": "<SSN_1>", "ssn_n": 9}
    assert r.redact_trace({"ssn": "not given"}, None)[0] == {"ssn": "not given"}


# ---------------------------------------------------------------- fields named like secrets


@pytest.mark.parametrize(
    "name",
    [
        "password", "passwd", "pwd", "secret", "client_secret", "token", "access_token", "refresh_token",
        "api_key", "apikey", "api-key", "private_key", "authorization", "credentials", "db_password",
        "X-Api-Key", "Authorization", "PASSWORD", "dbPassword", "password2", "id_token", "apiKey",
        "aws_secret_access_key", "passwordHash", "api_keys", "dbpassword", "csrftoken", "userpwd",
    ],
)  # fmt: skip
def test_secret_field_names(name: str) -> None:
    assert secret_field(name)


@pytest.mark.parametrize(
    "name",
    [
        "max_tokens", "prompt_tokens", "completion_tokens", "tokens", "token_type", "token_count",
        "secret_name", "password_hint", "keyboard", "monkey", "author", "key", "role", "content",
        "aws_access_key_id", "expires_in", "tokenizer", "secretary", "maxtokens",
    ],
)  # fmt: skip
def test_not_secret_field_names(name: str) -> None:
    assert not secret_field(name)


def test_secret_named_fields_replaced_whatever_they_hold() -> None:
    r = Redactor()
    req = {
        "password": "pw",  # short
        "db_password": 1234,  # a number
        "X-Api-Key": 3.5,
        "token": "x",
        "Authorization": "Basic dXNlcjpwYXNz",
        "secret": True,  # booleans, null and empty strings stay
        "api_key": None,
        "pwd": "",
        "client_secret": ["s1", "s2"],
        "credentials": {"user": "bob", "password": "pw"},  # a dict: walked, its password replaced
        "max_tokens": 100,
        "usage": {"prompt_tokens": 5, "completion_tokens": 7},
        "logprobs": {"content": [{"token": "Hi", "logprob": -0.1}]},
        "access_token": "<SECRET_7>",  # already a placeholder: left as it is
    }
    red, _ = r.redact_trace(req, None)
    assert red == {
        "password": "<SECRET_1>",
        "db_password": "<SECRET_2>",
        "X-Api-Key": "<SECRET_3>",
        "token": "<SECRET_4>",
        "Authorization": "<SECRET_5>",
        "secret": True,
        "api_key": None,
        "pwd": "",
        "client_secret": ["<SECRET_6>", "<SECRET_7>"],
        "credentials": {"user": "bob", "password": "<SECRET_1>"},
        "max_tokens": 100,
        "usage": {"prompt_tokens": 5, "completion_tokens": 7},
        "logprobs": {"content": [{"token": "Hi", "logprob": -0.1}]},
        "access_token": "<SECRET_7>",
    }


def test_secret_fields_in_tool_arguments_and_tool_results() -> None:
    r = Redactor()
    args = json.dumps({"host": "db", "db_password": "pw1", "port": 5432})
    result = json.dumps({"status": "ok", "session": {"access_token": "t0k", "expires_in": 3600}})
    req = {
        "messages": [
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": args}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": result},
        ]
    }
    resp = {"choices": [{"message": {"tool_calls": [{"function": {"name": "g", "arguments": args}}]}}]}
    red_req, red_resp = r.redact_trace(req, resp)
    stored = red_req["messages"][0]["tool_calls"][0]["function"]["arguments"]
    assert json.loads(stored) == {"host": "db", "db_password": "<SECRET_1>", "port": 5432}
    assert json.loads(red_req["messages"][1]["content"]) == {
        "status": "ok",
        "session": {"access_token": "<SECRET_2>", "expires_in": 3600},
    }
    assert red_resp is not None and "pw1" not in json.dumps(red_resp)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('bad json {"password": "pw", "user": "bob"', 'bad json {"password": "<SECRET_1>", "user": "bob"'),
        ('echo {\\"api_key\\": \\"k1\\"}', 'echo {\\"api_key\\": \\"<SECRET_1>\\"}'),
        ("{'db_password': 'correct horse'}", "{'db_password': '<SECRET_1>'}"),
        ('"X-Api-Key": "abc"', '"X-Api-Key": "<SECRET_1>"'),
        ("db_password=hunter22", "db_password=<SECRET_1>"),
        ("Authorization: Basic dXNlcjpwYXNz", "Authorization: Basic <SECRET_1>"),
        ('password = "" and user = "bob"', 'password = "" and user = "bob"'),
        ('"max_tokens": "100", "token_type": "bearer"', '"max_tokens": "100", "token_type": "bearer"'),
    ],
)
def test_secret_fields_in_free_text(text: str, expected: str) -> None:
    assert Redactor().redact_text(text) == expected


# ---------------------------------------------------------------- context and record fields


def test_checked_values_next_to_other_numbers() -> None:
    r = Redactor()
    assert r.redact_text("qty 2 4111 1111 1111 1111") == "qty 2 <CARD_1>"
    assert r.redact_text("4111 1111 1111 1111 2024") == "<CARD_1> 2024"
    assert r.redact_text("BE68 5390 0754 7034 1234 x") == "<IBAN_1> 1234 x"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("said: xoxb-20486…", "said: <SECRET_1>…"),
        ("bad key sk-proj-Ab…", "bad key <SECRET_1>…"),
        ("token eyJhbGciOiJIUzI1…", "token <SECRET_1>…"),
        ("Authorization: Bearer 7f3a…", "Authorization: Bearer <SECRET_1>…"),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7x\nVw2Xy4…", "<SECRET_1>…"),
        ('{"k": "-----BEGIN PRIVATE KEY-----\\nMIIEvgIBADAN\\nQx9L", "n": 1', '{"k": "<SECRET_1>", "n": 1'),
        ("it said sk… and moved on…", "it said sk… and moved on…"),
    ],
)
def test_secrets_cut_short(text: str, expected: str) -> None:
    """An error snippet or a label cut to length can end inside a secret: what is left of it goes too."""
    assert Redactor().redact_text(text) == expected


def test_loopback_addresses_are_not_personal() -> None:
    r = Redactor()
    assert (
        r.redact_text("listening on 127.0.0.1:8787 and 0.0.0.0") == "listening on 127.0.0.1:8787 and 0.0.0.0"
    )
    assert r.redact_text("client 203.0.113.7") == "client <IP_1>"


def test_redact_record_covers_error_workload_and_model() -> None:
    rec = TraceRecord(
        id="t",
        workload="support for bob@example.com",
        model_requested="models/sk-proj-AbCdEf1234567890GhIj",
        error='upstream said: {"error": {"message": "bad key sk-proj-AbCdEf1234567890GhIjKl"}}',
        request={"messages": [{"role": "user", "content": "I am bob@example.com"}]},
    )
    red = Redactor().redact_record(rec)
    assert red.workload == "support for <EMAIL_1>"  # one placeholder set for the whole record
    assert "AbCdEf" not in red.model_requested and "AbCdEf" not in (red.error or "")
    assert red.request == {"messages": [{"role": "user", "content": "I am <EMAIL_1>"}]}


# ---------------------------------------------------------------- logs


@pytest.fixture
def log_redaction() -> Iterator[Redactor]:
    r = Redactor()
    install_log_redaction(r)
    try:
        yield r
    finally:
        uninstall_log_redaction()


def test_log_messages_and_tracebacks_pass_the_redactor(
    log_redaction: Redactor, caplog: pytest.LogCaptureFixture
) -> None:
    log = logging.getLogger("smallfleet.tests.redact.child")
    with caplog.at_level(logging.DEBUG):
        log.debug("login by %s with key %s", "bob@example.com", "sk-proj-AbCdEf1234567890GhIjKl")
        log.info({"password": "pw1"})  # not a string: flattened
        try:
            raise ValueError("card 4111 1111 1111 1111 refused")
        except ValueError:
            log.exception("charging %s failed", "alice@example.com")
        log.warning("stack of 203.0.113.9", stack_info=True)
    text = caplog.text
    for seed in (
        "bob@example.com",
        "AbCdEf1234567890",
        "pw1",
        "4111 1111",
        "alice@example.com",
        "203.0.113.9",
    ):
        assert seed not in text
    assert "login by <EMAIL_1> with key <SECRET_1>" in text
    assert "ValueError: card <CARD_1> refused" in text and "charging <EMAIL_1> failed" in text
    # The argument tuple keeps its shape (formatters such as uvicorn's access log unpack it).
    assert caplog.records[0].args == ("<EMAIL_1>", "<SECRET_1>")


def test_log_redaction_covers_every_logger(log_redaction: Redactor) -> None:
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(self.format(record))

    names = ("uvicorn.error", "", "some.library.deep.child")
    handlers = [(logging.getLogger(n), Keep()) for n in names]  # on each: uvicorn's do not propagate
    for logger, handler in handlers:
        logger.addHandler(handler)
    try:
        for name in names:
            logging.getLogger(name).warning("mail %s", "carol@example.com")
    finally:
        for logger, handler in handlers:
            logger.removeHandler(handler)
    assert seen and all(line == "mail <EMAIL_1>" for line in seen)


def test_log_redaction_leaves_clean_records_alone(
    log_redaction: Redactor, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        logging.getLogger("x").info("wrote %d traces in %.1f ms", 12, 3.5)
        logging.getLogger("x").info("bad format %d", "not a number")  # logging's own error path
    first = caplog.records[0]
    assert (first.msg, first.args) == ("wrote %d traces in %.1f ms", (12, 3.5))  # untouched


def test_log_redaction_idempotent_and_undone(caplog: pytest.LogCaptureFixture) -> None:
    before = logging.getLogRecordFactory()
    install_log_redaction(Redactor())
    installed = logging.getLogRecordFactory()
    install_log_redaction(Redactor(RedactionConfig(kinds=["email"])))  # swaps the redactor only
    assert logging.getLogRecordFactory() is installed
    install_log_redaction(Redactor(RedactionConfig(enabled=False)))  # a disabled one installs nothing
    assert logging.getLogRecordFactory() is installed
    with caplog.at_level(logging.INFO):
        logging.getLogger("x").info("a@b.com 4111111111111111")
    assert "<EMAIL_1> 4111111111111111" in caplog.text
    uninstall_log_redaction()
    uninstall_log_redaction()
    assert logging.getLogRecordFactory() is before
    caplog.clear()
    with caplog.at_level(logging.INFO):
        logging.getLogger("x").info("a@b.com")
    assert "a@b.com" in caplog.text


def test_log_redaction_does_not_recurse(log_redaction: Redactor, caplog: pytest.LogCaptureFixture) -> None:
    class Loud:
        def __str__(self) -> str:  # logs while its record is being redacted
            logging.getLogger("inner").info("inner sees dave@example.com")
            return "loud dave@example.com"

    with caplog.at_level(logging.INFO):
        logging.getLogger("outer").info("value %s", Loud())
    assert "value loud <EMAIL_1>" in caplog.text and "value loud dave" not in caplog.text


def test_log_redaction_is_cheap_when_nothing_matches(log_redaction: Redactor) -> None:
    factory = logging.getLogRecordFactory()
    args = (
        "smallfleet.gateway",
        logging.INFO,
        __file__,
        1,
        "trace %s written in %d ms",
        ("a1b2c3", 12),
        None,
    )
    start = time.perf_counter()
    for _ in range(2000):
        factory(*args)
    per_record = (time.perf_counter() - start) / 2000
    assert per_record < 200e-6, f"{per_record * 1e6:.0f} µs a record"


# ---------------------------------------------------------------- property: seeded secrets never survive

#: kind → (text embedded, the strings that must not survive it)
EMBEDDED: dict[str, tuple[str, list[str]]] = {
    "email": ("bob.smith@example.com", ["bob.smith@example.com"]),
    "phone": ("+1 (415) 555-0132", ["555-0132"]),
    "phone_dashes": ("415-555-0199", ["415-555-0199"]),
    "phone_intl": ("+44 20 7946 0958", ["7946 0958"]),
    "card": ("4111 1111 1111 1111", ["4111 1111 1111 1111", "4111111111111111"]),
    "card_amex": ("3782-822463-10005", ["3782-822463-10005"]),
    "card_compact": ("5555555555554444", ["5555555555554444"]),
    "iban": ("DE89 3704 0044 0532 0130 00", ["3704 0044 0532 0130"]),
    "iban_compact": ("GB82WEST12345698765432", ["GB82WEST12345698765432"]),
    "iban_round": ("BE68 5390 0754 7034", ["BE68 5390 0754 7034"]),
    "ipv4": ("203.0.113.42", ["203.0.113.42"]),
    "ipv6": ("2001:db8::8a2e:370:7334", ["2001:db8::8a2e:370:7334"]),
    "ssn": ("123-45-6789", ["123-45-6789"]),
    "ssn_spaces": ("219 09 9999", ["219 09 9999"]),
    "ssn_keyword": ("SSN: 078051120", ["078051120"]),
    "openai": ("sk-proj-AbCdEf1234567890GhIjKlMn", ["AbCdEf1234567890"]),
    "aws": ("AKIAIOSFODNN7EXAMPLE", ["AKIAIOSFODNN7EXAMPLE"]),
    "github": ("ghp_" + "a1B2c3D4e5" * 4, ["a1B2c3D4e5a1B2c3D4e5"]),
    "jwt": (
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        ["dozjgNryP4J3jVmNHl0w5N"],
    ),
    "bearer": ("Authorization: Bearer 9f8e7d6c5b4a39281706abcdef", ["9f8e7d6c5b4a39281706abcdef"]),
    "pem": (PEM, ["MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7", "kJ8Lr0y4Zq"]),
    "assignment": ("api_key=ZXhhbXBsZXNlY3JldA", ["ZXhhbXBsZXNlY3JldA"]),
    "json_field": ('{"db_password": "x9"}', ['"x9"']),
    "escaped_json_field": ('\\"access_token\\": \\"t0k\\"', ["t0k"]),
}

_WORD = st.text(alphabet=string.ascii_letters + string.digits + ".,;:!?()'-/+#", max_size=10)
_PLACEHOLDER = re.compile(r"<[A-Z]+_\d+>")


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(sorted(EMBEDDED)), words=st.lists(_WORD, max_size=20), data=st.data())
def test_property_seeded_secrets_never_survive(kind: str, words: list[str], data: st.DataObject) -> None:
    seed, secrets = EMBEDDED[kind]
    at = data.draw(st.integers(0, len(words)), label="position")
    text = " ".join([*words[:at], seed, *words[at:]])
    r = Redactor()
    once = r.redact_text(text)
    for secret in secrets:
        assert secret not in once, (kind, text, once)
    # Redacting again adds no placeholder (what is stored can be redacted again safely).
    twice = r.redact_text(once)
    assert len(_PLACEHOLDER.findall(twice)) == len(_PLACEHOLDER.findall(once)), (once, twice)


@settings(max_examples=150, deadline=None)
@given(
    key=st.sampled_from(["password", "db_password", "X-Api-Key", "access_token", "client_secret", "pwd"]),
    value=st.one_of(
        st.text(min_size=1, max_size=12).filter(lambda v: not _PLACEHOLDER.fullmatch(v)),
        st.integers(),
        st.floats(allow_nan=False),
    ),
    depth=st.integers(0, 3),
    as_string=st.booleans(),
)
def test_property_secret_fields_never_survive(key: str, value: object, depth: int, as_string: bool) -> None:
    doc: object = {key: value, "note": "n"}
    for _ in range(depth):
        doc = {"outer": [doc]}
    r = Redactor()
    req = {"messages": [{"role": "tool", "content": json.dumps(doc) if as_string else doc}]}
    red, _ = r.redact_trace(req, None)
    inner = red["messages"][0]["content"]
    inner = json.loads(inner) if as_string else inner
    for _ in range(depth):
        inner = inner["outer"][0]
    assert inner == {key: "<SECRET_1>", "note": "n"}
    assert r.redact_trace(red, None)[0] == red  # idempotent
