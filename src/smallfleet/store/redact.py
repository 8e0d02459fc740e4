"""Redaction: secrets and personal data are replaced before a trace is stored.

``Redactor(config).redact_trace(request, response)`` walks every string in both
JSON documents (message contents, tool-call argument strings, metadata, keys)
and replaces what it finds with typed placeholders, numbered per type and stable
within one trace: the same e-mail in the request and in the response becomes the
same ``<EMAIL_1>``.

Built-in kinds (``redaction.kinds``; all when unset):

========  ==========================================================================
email     ``name@example.com``                                        → ``<EMAIL_n>``
phone     ``+44 20 7946 0958``, ``(415) 555-0132``, ``415-555-0132``    → ``<PHONE_n>``
card      payment card numbers: known prefix, length, Luhn-checked     → ``<CARD_n>``
iban      IBANs, with or without spaces, mod-97-checked                → ``<IBAN_n>``
ip        IPv4 and IPv6 addresses                                       → ``<IP_n>``
secret    ``sk-…`` keys, AWS ``AKIA…`` keys, bearer tokens, JWTs, GitHub/Slack/Google
          tokens, PEM private key blocks, ``api_key=…``-style assignments → ``<SECRET_n>``
========  ==========================================================================

User patterns (``redaction.patterns: {NAME: regex}``) run first and become
``<NAME_n>``; a pattern with a group named ``value`` replaces only that group.

A JSON document inside a string (tool-call ``arguments``) is parsed, redacted
and dumped again, so it stays valid JSON. Only what is stored is redacted: the
upstream model still receives the original request.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from smallfleet.errors import ConfigError

if TYPE_CHECKING:
    from smallfleet.config import RedactionConfig
    from smallfleet.store.records import TraceRecord

__all__ = ["KINDS", "Redactor", "iban_valid", "luhn_valid"]

#: The built-in detector kinds.
KINDS = ("secret", "email", "iban", "card", "ip", "phone")

_DIGIT = re.compile(r"\d")


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum of a string of digits."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _card_prefix_ok(d: str) -> bool:
    n = len(d)
    if d[0] == "4":  # Visa
        return n in (13, 16, 19)
    two, four = int(d[:2]), int(d[:4])
    if 51 <= two <= 55 or 2221 <= four <= 2720:  # Mastercard
        return n == 16
    if two in (34, 37):  # American Express
        return n == 15
    if two in (36, 38, 39) or 300 <= int(d[:3]) <= 305:  # Diners
        return 14 <= n <= 19
    if d.startswith(("6011", "65")) or 644 <= int(d[:3]) <= 649 or two == 62:  # Discover, UnionPay
        return 16 <= n <= 19
    if 3528 <= four <= 3589:  # JCB
        return 16 <= n <= 19
    return (two == 50 or 56 <= two <= 69) and 12 <= n <= 19  # Maestro


def _card_ok(value: str) -> bool:
    d = re.sub(r"[ -]", "", value)
    return 13 <= len(d) <= 19 and _card_prefix_ok(d) and luhn_valid(d)


def iban_valid(value: str) -> bool:
    """Whether ``value`` (spaces allowed) is an IBAN with a correct mod-97 check."""
    s = value.replace(" ", "").upper()
    if not (15 <= len(s) <= 34) or not s[:2].isalpha() or not s[2:4].isdigit():
        return False
    moved = s[4:] + s[:4]
    try:
        num = "".join(str(int(ch, 36)) for ch in moved)
    except ValueError:
        return False
    return int(num) % 97 == 1


def _ipv6_ok(value: str) -> bool:
    if len(value) < 6 or value.count(":") < 2:
        return False
    try:
        ipaddress.IPv6Address(value.split("%")[0])
    except ValueError:
        return False
    return True


def _phone_ok(value: str) -> bool:
    n = sum(ch.isdigit() for ch in value)
    return 8 <= n <= 15


@dataclass(frozen=True)
class _Detector:
    kind: str
    label: str  # the placeholder's name: EMAIL → <EMAIL_n>
    regex: re.Pattern[str]
    precheck: Callable[[str], bool]
    validate: Callable[[str], bool] | None = None
    normalise: Callable[[str], str] = str


def _has(*needles: str) -> Callable[[str], bool]:
    return lambda s: any(n in s for n in needles)


def _has_ci(*needles: str) -> Callable[[str], bool]:
    return lambda s: any(n in s.lower() for n in needles)


def _has_digit(s: str) -> bool:
    return _DIGIT.search(s) is not None


def _digits_only(s: str) -> str:
    return re.sub(r"\D", "", s)


_SECRET_KEYWORDS = (
    "api_key|api-key|apikey|access_key|access-key|secret_key|secret|client_secret|token|"
    "auth_token|access_token|refresh_token|password|passwd|pwd"
)

_BUILTIN: list[_Detector] = [
    _Detector(
        "secret",
        "SECRET",
        re.compile(
            r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----.*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY"
            r"(?: BLOCK)?-----",
            re.S,
        ),
        _has("PRIVATE KEY"),
    ),
    _Detector(
        "secret",
        "SECRET",
        re.compile(
            r"(?<![\w-])(?:"
            r"sk-[A-Za-z0-9_\-]{16,}"  # OpenAI / Anthropic style
            r"|(?:AKIA|ASIA)[0-9A-Z]{16}"  # AWS access key ids
            r"|gh[pousr]_[A-Za-z0-9]{30,}"  # GitHub
            r"|github_pat_[A-Za-z0-9_]{40,}"
            r"|xox[abposr]-[A-Za-z0-9-]{10,}"  # Slack
            r"|AIza[0-9A-Za-z_\-]{35}"  # Google
            r"|eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"  # JWT
            r")(?![\w-])"
        ),
        _has("sk-", "AKIA", "ASIA", "gh", "xox", "AIza", "eyJ"),
    ),
    _Detector(
        "secret",
        "SECRET",
        re.compile(r"(?i)\bbearer\s+(?P<value>[A-Za-z0-9\-._~+/]{8,}=*)"),
        _has_ci("bearer"),
    ),
    _Detector(
        "secret",
        "SECRET",
        re.compile(
            rf"(?i)\b(?:{_SECRET_KEYWORDS})\b[\"']?\s*[:=]\s*[\"']?(?P<value>(?!<[A-Z])[^\s\"',;\\<>]{{6,}})"
        ),
        _has_ci("key", "secret", "token", "passw", "pwd"),
    ),
    _Detector(
        "email",
        "EMAIL",
        re.compile(
            r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"
        ),
        _has("@"),
        normalise=str.lower,
    ),
    _Detector(
        "iban",
        "IBAN",
        re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b"),
        _has_digit,
        iban_valid,
        lambda s: s.replace(" ", "").upper(),
    ),
    _Detector(
        "card",
        "CARD",
        re.compile(r"(?<![\w+-])\d(?:[ -]?\d){12,18}(?![\w-])"),
        _has_digit,
        _card_ok,
        _digits_only,
    ),
    _Detector(
        "ip",
        "IP",
        re.compile(
            r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|:|\d{1,3}(?:\.\d{1,3}){3})?"
            r"(?:%[\w.]+)?(?![\w:])"
        ),
        lambda s: s.count(":") >= 2,
        _ipv6_ok,
        str.lower,
    ),
    _Detector(
        "ip",
        "IP",
        re.compile(
            r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\w]|\.\d)"
        ),
        _has_digit,
    ),
    _Detector(
        "phone",
        "PHONE",
        re.compile(
            r"(?<![\w+])(?:"
            r"\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,6}"  # international: +44 20 7946 0958, +4915112345678
            r"|\(\d{3}\) ?\d{3}[ .-]\d{4}"  # (415) 555-0132
            r"|\d{3}([.-])\d{3}\1\d{4}"  # 415-555-0132, 415.555.0132
            r"|0\d{1,4}(?: \d{2,4}){2,4}"  # national with spaces: 020 7946 0958, 06 12 34 56 78
            r")(?![\w-]|\.\d)"
        ),
        _has_digit,
        _phone_ok,
        lambda s: re.sub(r"[^\d+]", "", s),
    ),
]

_LABEL = re.compile(r"^[A-Z][A-Z0-9_]*$")


class _Session:
    """Placeholders of one trace: the same value gets the same placeholder."""

    __slots__ = ("counts", "seen")

    def __init__(self) -> None:
        self.seen: dict[tuple[str, str], str] = {}
        self.counts: dict[str, int] = {}

    def placeholder(self, label: str, value: str) -> str:
        key = (label, value)
        ph = self.seen.get(key)
        if ph is None:
            n = self.counts.get(label, 0) + 1
            self.counts[label] = n
            ph = self.seen[key] = f"<{label}_{n}>"
        return ph


class Redactor:
    """Replaces secrets and personal data in traces with typed placeholders (see the module docs)."""

    def __init__(self, config: RedactionConfig | None = None) -> None:
        if config is None:
            from smallfleet.config import RedactionConfig

            config = RedactionConfig()
        self.enabled = config.enabled
        kinds = set(KINDS if config.kinds is None else config.kinds)
        unknown = kinds - set(KINDS)
        if unknown:
            raise ConfigError(
                f"redaction.kinds: unknown kind(s) {sorted(unknown)}; choose from {', '.join(KINDS)}."
            )
        self._detectors: list[_Detector] = [self._user_detector(n, p) for n, p in config.patterns.items()]
        self._detectors += [d for d in _BUILTIN if d.kind in kinds]

    @staticmethod
    def _user_detector(name: str, pattern: str) -> _Detector:
        label = name.upper()
        if not _LABEL.match(label):
            raise ConfigError(
                f"redaction.patterns: {name!r} is not a usable placeholder name (letters, digits, _)."
            )
        try:
            rx = re.compile(pattern)
        except re.error as e:
            raise ConfigError(f"redaction.patterns.{name}: not a valid regular expression: {e}") from None
        return _Detector("user", label, rx, lambda s: True)

    # -------------------------------------------------------------- public API

    def redact_trace(
        self, request: dict[str, Any], response: dict[str, Any] | None
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """Redacted copies of a request and its response, with placeholders shared between them."""
        if not self.enabled:
            return request, response
        session = _Session()
        return self._walk(request, session), (None if response is None else self._walk(response, session))

    def redact_record(self, record: TraceRecord) -> TraceRecord:
        """The record with its request, response, metadata and error redacted (one placeholder set)."""
        if not self.enabled:
            return record
        from dataclasses import replace

        s = _Session()
        return replace(
            record,
            request=None if record.request is None else self._walk(record.request, s),
            response=None if record.response is None else self._walk(record.response, s),
            metadata=self._walk(record.metadata, s) if record.metadata else record.metadata,
            error=None if record.error is None else self._text(record.error, s),
        )

    def redact_text(self, text: str) -> str:
        """One string redacted on its own."""
        return self._text(text, _Session()) if self.enabled else text

    # -------------------------------------------------------------- internals

    def _walk(self, node: Any, s: _Session) -> Any:
        if isinstance(node, str):
            return self._string(node, s)
        if isinstance(node, dict):
            return {
                self._string(k, s) if isinstance(k, str) else k: self._walk(v, s) for k, v in node.items()
            }
        if isinstance(node, list):
            return [self._walk(v, s) for v in node]
        if isinstance(node, int) and not isinstance(node, bool) and abs(node) >= 10**12:
            # A card number sent as a JSON number.
            text = str(node)
            out = self._text(text, s)
            return node if out == text else out
        return node

    def _string(self, text: str, s: _Session) -> str:
        stripped = text.lstrip()
        if stripped[:1] in ("{", "[") and len(stripped) > 1:
            # A JSON document inside a string (tool-call arguments): keep it valid JSON.
            try:
                doc = json.loads(text)
            except ValueError:
                doc = None
            if isinstance(doc, (dict, list)):
                red = self._walk(doc, s)
                return text if red == doc else json.dumps(red, ensure_ascii=False)
        return self._text(text, s)

    def _text(self, text: str, s: _Session) -> str:
        if len(text) < 6:
            return text
        for d in self._detectors:
            if d.precheck(text):
                text = d.regex.sub(lambda m, d=d: self._replace(m, d, s), text)
        return text

    @staticmethod
    def _replace(m: re.Match[str], d: _Detector, s: _Session) -> str:
        whole = m.group(0)
        try:
            start, end = m.span("value")
        except IndexError:
            start, end = m.span()
        if start < 0:
            start, end = m.span()
        value = m.string[start:end]
        if not value or (d.validate is not None and not d.validate(value)):
            return whole
        ph = s.placeholder(d.label, d.normalise(value))
        return whole[: start - m.start()] + ph + whole[end - m.start() :]
