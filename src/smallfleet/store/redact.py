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
ip        IPv4 and IPv6 addresses (not loopback ``127.x`` or ``0.0.0.0``) → ``<IP_n>``
ssn       US social security numbers ``123-45-6789``, ``123 45 6789``, and nine digits
          after a keyword (``SSN: 123456789``); invalid ones are kept     → ``<SSN_n>``
secret    ``sk-…`` keys, AWS ``AKIA…`` keys, bearer tokens, JWTs, GitHub/Slack/Google
          tokens, PEM private key blocks, ``api_key=…``-style assignments, and the value
          of any JSON field named like a secret (``password``, ``db_password``,
          ``X-Api-Key``, ``access_token``, …), whatever it looks like      → ``<SECRET_n>``
========  ==========================================================================

User patterns (``redaction.patterns: {NAME: regex}``) run first and become
``<NAME_n>``; a pattern with a group named ``value`` replaces only that group.

A JSON document inside a string (tool-call ``arguments``) is parsed, redacted
and dumped again, so it stays valid JSON. Only what is stored is redacted: the
upstream model still receives the original request.

:func:`install_log_redaction` makes every log record of the process pass a
redactor too (its message and its traceback).
"""

from __future__ import annotations

import functools
import ipaddress
import itertools
import json
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from smallfleet.errors import ConfigError

if TYPE_CHECKING:
    from smallfleet.config import RedactionConfig
    from smallfleet.store.records import TraceRecord

__all__ = [
    "KINDS",
    "Redactor",
    "iban_valid",
    "install_log_redaction",
    "luhn_valid",
    "secret_field",
    "ssn_valid",
    "uninstall_log_redaction",
]

#: The built-in detector kinds.
KINDS = ("secret", "email", "iban", "card", "ip", "phone", "ssn")


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


def _ipv4_ok(value: str) -> bool:
    # Loopback and "any" addresses identify no one (and keep "listening on 127.0.0.1:8787" readable).
    return not value.startswith("127.") and value != "0.0.0.0"


def ssn_valid(value: str) -> bool:
    """Whether ``value`` (separators allowed) is a US social security number that can be issued.

    Never issued: area 000, 666 and 900–999, group 00, serial 0000.
    """
    d = _digits_only(value)
    if len(d) != 9:
        return False
    area, group, serial = d[:3], d[3:5], d[5:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


# ---------------------------------------------------------------- fields named like secrets

#: Name parts that make a JSON field's value a secret, whatever the value looks like.
_SECRET_PARTS = frozenset(
    {
        *("password", "passwd", "passphrase", "pwd", "secret", "secrets", "token"),
        *("apikey", "privatekey", "secretkey", "accesskey", "authorization", "credential", "credentials"),
    }
)
_SECRET_ENDINGS = tuple(_SECRET_PARTS)
_SECRET_PAIRS = frozenset(
    (first, key) for first in ("api", "private", "secret", "access", "signing") for key in ("key", "keys")
)
#: A last name part that describes the secret rather than holding it: ``token_type``, ``secret_name``.
_ABOUT_PARTS = frozenset(
    {
        *("count", "limit", "type", "types", "length", "len", "usage", "url", "uri", "endpoint"),
        *("expires", "expiry", "expiration", "ttl", "id", "ids", "name", "names", "path", "file", "hint"),
        "policy",
    }
)
_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_NON_ALNUM = re.compile(r"[^a-z0-9]+")
_ROUGH = re.compile(r"(?i)pass|pwd|secret|token|key|auth|cred")


def _name_parts(name: str) -> list[str]:
    """``X-Api-Key`` → ``[x, api, key]``; ``dbPassword2`` → ``[db, password]``."""
    parts = _NON_ALNUM.split(_CAMEL.sub(r"\1_\2", name).lower())
    return [p.rstrip("0123456789") for p in parts if p.rstrip("0123456789")]


@functools.lru_cache(maxsize=4096)
def secret_field(name: str) -> bool:
    """Whether a field (JSON key, header) named ``name`` holds a secret: ``password``, ``X-Api-Key`` …"""
    if _ROUGH.search(name) is None:
        return False
    parts = _name_parts(name)
    if not parts or parts[-1] in _ABOUT_PARTS:
        return False
    if any(p.endswith(_SECRET_ENDINGS) for p in parts):  # dbpassword, authtoken: no separator
        return True
    return any(pair in _SECRET_PAIRS for pair in itertools.pairwise(parts))


@functools.lru_cache(maxsize=1024)
def _ssn_field(name: str) -> bool:
    parts = _name_parts(name) if "s" in name.lower() else []
    return "ssn" in parts or ("social", "security") in itertools.pairwise(parts)


#: A cheap test that a text may hold a detector's match: the text and its lower-case form
#: (None when lower-casing is not faithful to the regex's case-insensitive match).
_Precheck = Callable[[str, "str | None"], bool]


@dataclass(frozen=True)
class _Detector:
    kind: str
    label: str  # the placeholder's name: EMAIL → <EMAIL_n>
    regex: re.Pattern[str]
    #: Must hold wherever ``regex`` matches (it is only a shortcut past texts it cannot match):
    #: substrings, or small regexes that start with a literal or a character class, which the
    #: regex engine skips through in C instead of trying the detector at every position.
    precheck: _Precheck
    validate: Callable[[str], bool] | None = None
    normalise: Callable[[str], str] = str
    #: Digits a text holds at least wherever ``validate`` accepts a match (checked before ``precheck``).
    min_digits: int = 0


def _has(needle: str) -> _Precheck:
    return lambda s, low: needle in s


def _has_ci(*needles: str) -> _Precheck:
    return lambda s, low: low is None or any(n in low for n in needles)


def _finds(*triggers: str, ci: bool = False) -> _Precheck:
    """True when one of the ``triggers`` (regexes) is found; ``ci``: in the lower-cased text."""
    compiled = [re.compile(t) for t in triggers]
    if ci:
        return lambda s, low: low is None or any(rx.search(low) is not None for rx in compiled)
    return lambda s, low: any(rx.search(s) is not None for rx in compiled)


#: Characters that a case-insensitive regex matches to an ASCII letter and ``str.lower`` does not
#: turn into that letter alone (İ ı ſ K): in a text with one, case-insensitive prechecks pass.
_UNFAITHFUL_LOWER = re.compile("[\u0130\u0131\u017f\u212a]")


_DIGIT = re.compile(r"\d")
_ASCII_DIGITS = b"0123456789"


def _lower(text: str) -> str | None:
    if text.isascii() or _UNFAITHFUL_LOWER.search(text) is None:
        return text.lower()
    return None


def _count_digits(text: str) -> int:
    r"""What ``\d`` matches in ``text``: ASCII digits, and other scripts' digits."""
    if text.isascii():
        raw = text.encode("ascii")
        return len(raw) - len(raw.translate(None, _ASCII_DIGITS))
    return len(_DIGIT.findall(text))


def _digits_only(s: str) -> str:
    return re.sub(r"\D", "", s)


# Field names in free text: ``api_key=…``, ``db_password: …``, ``"X-Api-Key": "…"`` (prefixes end in _ or -).
_SECRET_KEYWORDS = (
    r"(?<![A-Za-z0-9])(?:api[_-]?key|access[_-]?key|secret[_-]?key|private[_-]?key|secret|token|"
    r"password|passwd|passphrase|pwd|authorization|credentials?)(?![A-Za-z0-9])"
)
#: An HTTP auth scheme before the credential: ``Authorization: Basic dXNlcjpwYXNz``.
_SCHEME = r"(?:basic|bearer|digest|token)"

_GITHUB = re.compile(r"gh[pousr]_")
_NINE_DIGITS = re.compile(r"\d{9}")
_SSN_WORDS = _has_ci("ssn", "social")
_KEYWORD_THEN_SIGN = _finds(
    r"(?:key|secret|token|passw(?:or)?d|passphrase|pwd|authorization|credentials?)\\*[\"']?\s*[:=]", ci=True
)
_IPV6_COLONS = re.compile(r":[0-9A-Fa-f]{0,4}:")

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
        # Not "gh" alone: English is full of it (through, right).
        lambda s, low: (
            "sk-" in s
            or "AKIA" in s
            or "ASIA" in s
            or "github_pat_" in s
            or "xox" in s
            or "AIza" in s
            or "eyJ" in s
            or ("gh" in s and _GITHUB.search(s) is not None)
        ),
    ),
    _Detector(
        "secret",
        "SECRET",
        re.compile(r"(?i)\bbearer\s+(?P<value>[A-Za-z0-9\-._~+/]{8,}=*)"),
        _has_ci("bearer"),
    ),
    _Detector(  # a private key block without its end (cut short): up to where its base64 stops
        "secret",
        "SECRET",
        re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----(?:\\+[rn]|[\sA-Za-z0-9+/=])*"),
        _has("PRIVATE KEY"),
    ),
    _Detector(  # a key or token cut short by an ellipsis (an error snippet, a label cut to length)
        "secret",
        "SECRET",
        re.compile(
            r"(?<![\w-])(?:sk-|AKIA|ASIA|gh[pousr]_|github_pat_|xox[abposr]-|AIza|eyJ)[A-Za-z0-9_\-.]*(?=…)"
            r"|(?i:\bbearer\s+)(?P<value>[A-Za-z0-9\-._~+/]+)(?=…)"
        ),
        _has("…"),
    ),
    _Detector(  # a field named like a secret in text, then its value
        "secret",
        "SECRET",
        re.compile(
            rf"(?i){_SECRET_KEYWORDS}\\*[\"']?\s*[:=]\s*(?:"
            # quoted, any length: "password": "pw1"; \\"token\\": \\"…\\" in JSON inside JSON
            r"(?P<q>\\*[\"'])(?P<value>(?!(?P=q))(?!<[A-Z])[^\n]{1,1024}?)(?<!\\)(?P=q)"
            # unquoted, 6 characters or more: api_key=…, Authorization: Basic …
            rf"|\\*[\"']?(?:{_SCHEME}\s+)?(?P<bare>(?!<[A-Z])(?!{_SCHEME}\s)[^\s\"',;\\<>]{{6,}}))"
        ),
        # A keyword's last word, then what has to follow it: `key` alone is in most prose.
        lambda s, low: ("=" in s or ":" in s) and _KEYWORD_THEN_SIGN(s, low),
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
        "ssn",
        "SSN",
        re.compile(r"(?<![\w+-])\d{3}([- ])\d{2}\1\d{4}(?![\w+-]|\.\d)"),
        _finds(r"\d{3}([- ])\d{2}\1\d{4}"),
        ssn_valid,
        _digits_only,
        min_digits=9,
    ),
    _Detector(  # nine digits in a row only after a keyword: "SSN: 123456789"
        "ssn",
        "SSN",
        re.compile(
            r"(?i)\b(?:ssn|social[\s_-]*security(?:[\s_-]*(?:number|num|no))?)\b"
            r"\W{0,8}(?:(?:is|was|of)\W{1,3})?(?P<value>\d{9})(?!\d)"
        ),
        lambda s, low: _SSN_WORDS(s, low) and _NINE_DIGITS.search(s) is not None,
        ssn_valid,
        min_digits=9,
    ),
    _Detector(
        "iban",
        "IBAN",
        re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b"),
        _finds(r"[A-Z]{2}\d{2}"),
        iban_valid,
        lambda s: s.replace(" ", "").upper(),
        min_digits=2,
    ),
    _Detector(
        "card",
        "CARD",
        re.compile(r"(?<![\w+-])\d(?:[ -]?\d){12,18}(?![\w+-])"),
        _finds(r"\d(?:[ -]?\d){12}"),
        _card_ok,
        _digits_only,
        min_digits=13,
    ),
    _Detector(
        "ip",
        "IP",
        re.compile(
            r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|:|\d{1,3}(?:\.\d{1,3}){3})?"
            r"(?:%[\w.]+)?(?![\w:])"
        ),
        lambda s, low: s.count(":") >= 2 and _IPV6_COLONS.search(s) is not None,
        _ipv6_ok,
        str.lower,
    ),
    _Detector(
        "ip",
        "IP",
        re.compile(
            r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\w]|\.\d)"
        ),
        _finds(r"\d\.\d{1,3}\.\d{1,3}\.\d"),
        _ipv4_ok,
        min_digits=4,
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
            r")(?![\w+-]|\.\d)"
        ),
        # One per alternative: +4…, (415), 415-555 or 415.555, 020 7946 09.
        _finds(r"\+\d|\(\d{3}\)", r"\d\d\d[.-]\d{3}", r"0\d{1,4} \d{2,4} \d\d"),
        _phone_ok,
        lambda s: re.sub(r"[^\d+]", "", s),
        min_digits=8,
    ),
]

_LABEL = re.compile(r"^[A-Z][A-Z0-9_]*$")


class _Session:
    """Placeholders of one trace: the same value gets the same placeholder."""

    __slots__ = ("counts", "replaced", "seen")

    def __init__(self) -> None:
        self.seen: dict[tuple[str, str], str] = {}
        self.counts: dict[str, int] = {}
        self.replaced = 0  # values replaced so far (a value seen before counts again)

    def placeholder(self, label: str, value: str) -> str:
        self.replaced += 1
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
        self._secret_fields = "secret" in kinds
        self._ssn_fields = "ssn" in kinds
        #: Short strings found clean (keys, roles, model names): a set, not a cache of answers, so
        #: nothing redacted is kept. Cleared when full; a race between threads only costs a scan.
        self._clean: set[str] = set()

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
        return _Detector("user", label, rx, lambda s, low: True)

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
        """The record with every string a client or an upstream chose redacted (one placeholder set).

        Request, response, metadata, error, workload and model_requested.
        """
        if not self.enabled:
            return record
        from dataclasses import replace

        s = _Session()
        return replace(
            record,
            request=None if record.request is None else self._walk(record.request, s),
            response=None if record.response is None else self._walk(record.response, s),
            metadata=self._walk(record.metadata, s) if record.metadata else record.metadata,
            error=None if record.error is None else self._string(record.error, s),
            workload=self._text(record.workload, s),
            model_requested=self._text(record.model_requested, s),
        )

    def redact_text(self, text: str) -> str:
        """One string redacted on its own."""
        return self._text(text, _Session()) if self.enabled else text

    # -------------------------------------------------------------- internals

    def _walk(self, node: Any, s: _Session) -> Any:
        if isinstance(node, str):
            return self._string(node, s)
        if isinstance(node, dict):
            return {self._key(k, s): self._member(k, v, node, s) for k, v in node.items()}
        if isinstance(node, list):
            return [self._walk(v, s) for v in node]
        if isinstance(node, int) and not isinstance(node, bool) and abs(node) >= 10**12:
            # A card number sent as a JSON number.
            text = str(node)
            out = self._text(text, s)
            return node if out == text else out
        return node

    def _key(self, key: Any, s: _Session) -> Any:
        return self._string(key, s) if isinstance(key, str) else key

    def _member(self, key: Any, value: Any, parent: dict[Any, Any], s: _Session) -> Any:
        """One value of a dict: a field named like a secret (or an SSN) is replaced whole."""
        if isinstance(key, str):
            if self._secret_fields and secret_field(key) and not _logprob_token(key, parent):
                return self._field(value, s, "SECRET", _secret_value)
            if self._ssn_fields and _ssn_field(key):
                return self._field(value, s, "SSN", _ssn_value)
        return self._walk(value, s)

    def _field(self, value: Any, s: _Session, label: str, pick: Callable[[Any], str | None]) -> Any:
        if isinstance(value, list):
            return [self._field(v, s, label, pick) for v in value]
        found = pick(value)
        return self._walk(value, s) if found is None else s.placeholder(label, found)

    def _string(self, text: str, s: _Session) -> str:
        stripped = text.lstrip()
        if stripped[:1] in ("{", "[") and len(stripped) > 1:
            # A JSON document inside a string (tool-call arguments): keep it valid JSON.
            try:
                doc = json.loads(text)
                if isinstance(doc, (dict, list)):
                    red = self._walk(doc, s)
                    return text if red == doc else json.dumps(red, ensure_ascii=False)
            except (ValueError, RecursionError):  # not JSON, or nested too deep to walk: plain text
                pass
        return self._text(text, s)

    def _text(self, text: str, s: _Session) -> str:
        if len(text) < 6 or text in self._clean:
            return text
        original, replaced = text, s.replaced
        low, digits = _lower(text), _count_digits(text)
        for d in self._detectors:
            if digits >= d.min_digits and d.precheck(text, low):
                red = self._sub(d, text, s)
                if red != text:  # later detectors look at what is left, as they always did
                    text, low, digits = red, _lower(red), _count_digits(red)
        if text is original and s.replaced == replaced and len(text) <= _CLEAN_MAX_CHARS:
            if len(self._clean) >= _CLEAN_MAX_STRINGS:
                self._clean.clear()
            self._clean.add(text)
        return text

    def _sub(self, d: _Detector, text: str, s: _Session) -> str:
        """``d``'s matches in ``text`` replaced; a match that fails its check is retried shorter."""
        if d.validate is None:
            return d.regex.sub(lambda m: self._replace(m, d, s), text)
        out: list[str] = []
        last = pos = 0
        retries = _RETRIES  # bounded: a table of numbers would otherwise cost a check per digit
        while (m := d.regex.search(text, pos)) is not None:
            good = _checked(d, m, retries > 0)
            if good is None:
                retries -= 1
                # e.g. "qty 2 4111 1111 1111 1111": the card starts later
                pos = m.start() + 1 if retries > 0 else m.end()
                continue
            out += (text[last : good.start()], self._replace(good, d, s))
            last = pos = good.end()
        return "".join((*out, text[last:])) if out else text

    @staticmethod
    def _replace(m: re.Match[str], d: _Detector, s: _Session) -> str:
        whole = m.group(0)
        start, end = _value_span(m)
        value = m.string[start:end]
        if not value:
            return whole
        ph = s.placeholder(d.label, d.normalise(value))
        return whole[: start - m.start()] + ph + whole[end - m.start() :]


_PLACEHOLDER = re.compile(r"<[A-Z][A-Z0-9_]*_\d+>")
#: Strings up to this long that were found clean are remembered (and this many at most).
_CLEAN_MAX_CHARS = 256
_CLEAN_MAX_STRINGS = 4096
#: Shorter matches tried when a match fails its check (a card is at most three short groups too long).
_SHORTER_TRIES = 8
#: Failed matches of one detector in one text that are tried again shorter and later.
_RETRIES = 128


def _value_span(m: re.Match[str]) -> tuple[int, int]:
    """The part of a match to replace: its group named ``value`` (or ``bare``) when it has one."""
    for name in ("value", "bare"):
        try:
            start, end = m.span(name)
        except IndexError:
            continue
        if start >= 0:
            return start, end
    return m.span()


def _checked(d: _Detector, m: re.Match[str], shorter: bool) -> re.Match[str] | None:
    """``m`` if its value passes ``d``'s check, else the longest shorter match ending between tokens."""
    assert d.validate is not None
    if d.validate(m.string[slice(*_value_span(m))]):
        return m
    if not shorter:
        return None
    text, start = m.string, m.start()
    ends = [e for e in range(m.end() - 1, start, -1) if not text[e].isalnum()]
    for end in ends[:_SHORTER_TRIES]:  # "4111 1111 1111 1111 2024": the card ends earlier
        short = d.regex.match(text, start, end)
        if short is not None and d.validate(text[slice(*_value_span(short))]):
            return short
    return None


def _secret_value(value: Any) -> str | None:
    """What a secret-named field holds, as the placeholder's key; None to leave it (booleans, null, "")."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        return value if value and not _PLACEHOLDER.fullmatch(value) else None
    return str(value) if isinstance(value, (int, float)) else None


def _ssn_value(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    text = str(value)
    return _digits_only(text) if ssn_valid(text) and re.fullmatch(r"[\d -]+", text.strip()) else None


def _logprob_token(key: str, parent: dict[Any, Any]) -> bool:
    """A logprobs entry's ``token`` is a piece of the answer, not a credential."""
    return key == "token" and "logprob" in parent


# ---------------------------------------------------------------- logs

_log_lock = threading.Lock()
_log_factory: _LogRedaction | None = None
_WITHHELD = "[log message withheld: it could not be redacted]"


class _LogRedaction:
    """A log record factory that redacts what the previous factory made (message and traceback)."""

    def __init__(self, previous: Callable[..., logging.LogRecord], redactor: Redactor | None) -> None:
        self.previous = previous
        self.redactor = redactor
        self._busy = threading.local()  # set while redacting: a log call from inside passes as it is

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self.previous(*args, **kwargs)
        redactor = self.redactor
        if redactor is None or getattr(self._busy, "on", False):
            return record
        self._busy.on = True
        try:
            _redact_log_record(record, redactor)
        except Exception:  # never log unredacted, never break the caller's log call
            record.msg, record.args, record.exc_info, record.exc_text = _WITHHELD, None, None, None
        finally:
            self._busy.on = False
        return record


def install_log_redaction(redactor: Redactor) -> None:
    """Make every log record of this process pass ``redactor``: its message and its traceback.

    Chained to the current log record factory, so it covers every logger (child
    loggers, uvicorn's, pytest's caplog). Idempotent: a second call only swaps
    the redactor. A disabled redactor installs nothing.
    """
    global _log_factory
    if not redactor.enabled:
        return
    with _log_lock:
        if _log_factory is not None:
            _log_factory.redactor = redactor
            return
        _log_factory = _LogRedaction(logging.getLogRecordFactory(), redactor)
        logging.setLogRecordFactory(_log_factory)


def uninstall_log_redaction() -> None:
    """Undo :func:`install_log_redaction` (for tests); a factory chained after ours is kept."""
    global _log_factory
    with _log_lock:
        factory, _log_factory = _log_factory, None
        if factory is None:
            return
        if logging.getLogRecordFactory() is factory:
            logging.setLogRecordFactory(factory.previous)
        else:  # another factory wraps ours: ours stays in the chain, passing records through
            factory.redactor = None


def _redact_log_record(record: logging.LogRecord, redactor: Redactor) -> None:
    _redact_log_message(record, redactor)
    if record.exc_info and not record.exc_text:
        # Formatters print exc_text when it is set, instead of formatting exc_info again.
        record.exc_text = redactor.redact_text(_TRACEBACKS.formatException(record.exc_info))
    if record.stack_info:
        record.stack_info = redactor.redact_text(record.stack_info)


_TRACEBACKS = logging.Formatter()


def _redact_log_message(record: logging.LogRecord, redactor: Redactor) -> None:
    try:
        message = record.getMessage()
    except Exception:  # arguments that do not fit the format: logging would print them raw
        record.msg, record.args = redactor.redact_text(f"{record.msg!s} {record.args!r}"), None
        return
    redacted = redactor.redact_text(message)
    if redacted == message:  # the common case: one format, one scan
        return
    if not _redact_log_args(record, redactor):
        record.msg, record.args = redacted, None


def _redact_log_args(record: logging.LogRecord, redactor: Redactor) -> bool:
    """Redact the format and each argument apart, keeping the argument tuple's shape.

    Formatters such as uvicorn's access log unpack ``record.args``; False when a
    secret spans the parts (or hides in a number) and the message must be flattened.
    """
    args = record.args
    if not isinstance(args, tuple) or not isinstance(record.msg, str):
        return False
    msg = redactor.redact_text(record.msg)
    new_args = tuple(_redact_log_arg(a, redactor) for a in args)
    try:
        message = msg % new_args if new_args else msg
    except Exception:
        return False
    if redactor.redact_text(message) != message:
        return False
    record.msg, record.args = msg, new_args
    return True


def _redact_log_arg(arg: Any, redactor: Redactor) -> Any:
    if arg is None or isinstance(arg, (bool, int, float)):
        return arg
    text = str(arg)
    redacted = redactor.redact_text(text)
    return arg if redacted == text else redacted
