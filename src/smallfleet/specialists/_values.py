"""Typed values in free text: numbers, dates, booleans, lists, and where a value occurs.

The encoder specialists find *spans* of the user's text; this module turns a span
into the value a JSON schema asks for (``"1,200"`` → ``1200``, ``"March 5th, 2024"``
→ ``"2024-03-05"``), and, for training, finds where a teacher's value occurs in the
text (exactly, case-insensitively, or as an equal number or date).
No third-party parser is needed: the formats are the common ones, written out here.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "find_value_spans",
    "is_iso_date",
    "parse_bool",
    "parse_date",
    "parse_number",
    "snap_span",
    "snap_to_quotes",
    "split_list",
    "word_ngrams",
]

_UNITS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "a": 1, "an": 1, "single": 1,
    "couple": 2, "pair": 2,
}  # fmt: skip
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
         "ninety": 90}  # fmt: skip
_SCALES = {"dozen": 12, "hundred": 100, "thousand": 1000, "million": 1_000_000, "billion": 1_000_000_000}
_SUFFIX = {"k": 1000, "m": 1_000_000, "mn": 1_000_000, "bn": 1_000_000_000, "b": 1_000_000_000}
_NUM_RE = re.compile(
    r"^[~≈]?\s*(?P<sign>[-+−])?\s*(?:[$€£¥₹]|usd|eur|gbp)?\s*(?P<num>\d{1,3}(?:[,\s’']\d{3})+(?:\.\d+)?|\d{1,3}(?:[.\s]\d{3})*,\d{1,2}|\d*\.\d+|\d+)"
    r"\s*(?P<suf>k|m|mn|bn|b)?\b\.?\s*(?:[$€£¥₹%]|[a-z]{0,12})?$",
    re.IGNORECASE,
)


def parse_number(text: str) -> int | float | None:
    """The number ``text`` spells (``"1,200"``, ``"$3.50"``, ``"12,50 EUR"``, ``"3.5k"``, ``"twenty-one"``).

    None when it spells none.

    An integral value is returned as ``int`` unless the text has a decimal point.
    """
    s = text.strip().strip(".,;:!?()[]\"'").strip()
    if not s:
        return None
    m = _NUM_RE.match(s)
    if m:
        num = m["num"]
        if re.search(r",\d{1,2}$", num):  # a decimal comma: "12,50", "1.299,99"
            num = re.sub(r"[.\s]", "", num).replace(",", ".")
        raw = re.sub(r"[,\s’']", "", num)
        value: int | float = float(raw) if "." in raw else int(raw)
        if m["suf"]:
            value = value * _SUFFIX[m["suf"].lower()]
            value = int(value) if float(value).is_integer() else value
        if m["sign"] in ("-", "−"):
            value = -value
        return value
    return _parse_number_words(s.lower())


def _parse_number_words(s: str) -> int | float | None:
    words = [w for w in re.split(r"[\s-]+", s) if w and w not in ("and", "of")]
    if not words or len(words) > 6:
        return None
    total: float = 0
    current: float = 0
    seen = False
    for w in words:
        if w in _UNITS:
            current += _UNITS[w]
        elif w in _TENS:
            current += _TENS[w]
        elif w in _SCALES:
            current = max(current, 1) * _SCALES[w]
            if _SCALES[w] >= 1000:
                total += current
                current = 0
        else:
            return None
        seen = True
    if not seen or words in (["a"], ["an"]):
        return None
    value = total + current
    return int(value) if float(value).is_integer() else value


_TRUE = {"true", "yes", "y", "on", "enable", "enabled", "1", "please", "sure", "ok", "include", "with"}
_FALSE = {"false", "no", "n", "off", "disable", "disabled", "0", "without", "exclude", "don't", "dont", "not"}


def parse_bool(text: str) -> bool | None:
    """``True``/``False`` for a yes/no-like word, else None."""
    s = text.strip().lower().strip(".,!?")
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    return None


_MONTHS = {
    m: i + 1
    for i, names in enumerate(
        [
            ("january", "jan"), ("february", "feb"), ("march", "mar"), ("april", "apr"), ("may",),
            ("june", "jun"), ("july", "jul"), ("august", "aug"), ("september", "sep", "sept"),
            ("october", "oct"), ("november", "nov"), ("december", "dec"),
        ]
    )
    for m in names
}  # fmt: skip
_MONTH = r"(?P<mon>" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + r")\.?"
_DAY = r"(?P<day>\d{1,2})(?:st|nd|rd|th)?"
_YEAR = r"(?P<year>\d{4}|'\d{2})"
_DATE_RES = [
    re.compile(r"^(?P<year>\d{4})[-/.](?P<mon>\d{1,2})[-/.](?P<day>\d{1,2})(?:[T ][\d:.]+Z?)?$"),
    re.compile(r"^(?P<a>\d{1,2})[/.-](?P<b>\d{1,2})[/.-](?P<year>\d{4}|\d{2})$"),
    re.compile(rf"^(?:the\s+)?{_DAY}\s*(?:of\s+)?{_MONTH}(?:,?\s*{_YEAR})?$", re.IGNORECASE),
    re.compile(rf"^{_MONTH}\s*(?:the\s+)?{_DAY}(?:,?\s*{_YEAR})?$", re.IGNORECASE),
]
ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def is_iso_date(value: Any) -> bool:
    return isinstance(value, str) and bool(ISO_DATE.match(value)) and parse_date(value) == value


def parse_date(text: str, day_first: bool = False, default_year: int | None = None) -> str | None:
    """The ISO 8601 date (``YYYY-MM-DD``) ``text`` writes, in a common format, else None.

    ``2024-03-05``, ``03/05/2024`` (month first unless ``day_first`` or the first number
    is over 12), ``5 March 2024``, ``5th of March, 2024``, ``March 5, 2024``, ``Mar. 5th '24``;
    with a ``default_year``, also a month and day without one (``Jan 30``, ``the 5th of March``).
    """
    s = text.strip().strip('.,;:!?()[]"').strip()
    for i, rx in enumerate(_DATE_RES):
        m = rx.match(s)
        if not m:
            continue
        year = m["year"]
        if year is None:
            if default_year is None:
                return None
            year = str(default_year)
        y = int(year.lstrip("'"))
        if len(year.lstrip("'")) == 2:
            y += 2000
        if i == 1:
            a, b = int(m["a"]), int(m["b"])
            mon, day = (b, a) if day_first or a > 12 else (a, b)
        else:
            mon_s = m["mon"]
            mon = int(mon_s) if mon_s.isdigit() else _MONTHS[mon_s.lower().rstrip(".")]
            day = int(m["day"])
        return _iso(y, mon, day)
    return None


def _iso(y: int, m: int, d: int) -> str | None:
    import datetime as dt

    try:
        return dt.date(y, m, d).isoformat()
    except ValueError:
        return None


_LIST_SPLIT = re.compile(r"\s*(?:,|;|/|\band\b|\bor\b|&|\+)\s*", re.IGNORECASE)


def split_list(text: str) -> list[str]:
    """``"Paris, London and Rome"`` → ``["Paris", "London", "Rome"]``."""
    return [p.strip(" .'\"") for p in _LIST_SPLIT.split(text) if p and p.strip(" .'\"")]


_WORD = re.compile(r"[^\s]+")
_EDGE = ".,;:!?()[]{}\"'“”‘’"


def word_ngrams(text: str, max_words: int = 8) -> list[tuple[int, int]]:
    """Character spans of every run of 1..max_words words, punctuation trimmed at the edges."""
    words = []
    for m in _WORD.finditer(text):
        s, e = m.start(), m.end()
        while s < e and text[s] in _EDGE:
            s += 1
        while e > s and text[e - 1] in _EDGE:
            e -= 1
        if s < e:
            words.append((s, e))
    out = []
    for i in range(len(words)):
        for j in range(i, min(len(words), i + max_words)):
            out.append((words[i][0], words[j][1]))
    return out


def snap_span(
    text: str, start: int, end: int, kind: str, default_year: int | None = None
) -> tuple[int, int] | None:
    """The run of words around ``text[start:end]`` that reads as a ``kind`` ("date" or "number").

    A span model may stop inside ``2025-11-26`` or take only ``March 5``; the overlapping
    word run that parses (the longest) is what was meant. None when none overlaps.
    """

    def parse(t: str) -> Any:
        return parse_date(t, default_year=default_year) if kind == "date" else parse_number(t)

    best: tuple[int, int] | None = None
    for s, e in word_ngrams(text, 5 if kind == "date" else 3):
        if (
            s < end
            and e > start
            and parse(text[s:e]) is not None
            and (best is None or e - s > best[1] - best[0])
        ):
            best = (s, e)
    return best


_QUOTED = re.compile(r"(?<!\w)'([^']+)'(?!\w)|\"([^\"]+)\"|“([^”]+)”|‘([^’]+)’")


def snap_to_quotes(text: str, start: int, end: int) -> tuple[int, int]:
    """A span inside or across a quoted passage becomes the whole passage (users quote literal text)."""
    for m in _QUOTED.finditer(text):
        g = next(i for i in range(1, 5) if m.group(i) is not None)
        qs, qe = m.start(g), m.end(g)
        if start < qe and end > qs and ((start >= qs - 1 and end <= qe + 1) or end - start < (qe - qs) * 2):
            return qs, qe
    return start, end


def _norm(s: str) -> str:
    return re.sub(r"[^0-9a-z]+", "", s.lower())


def find_value_spans(text: str, value: Any, kind: str = "string") -> list[tuple[int, int]]:
    """Character spans of ``text`` that say ``value``; ``kind`` is "string", "number" or "date".

    Strings: exact case-insensitive occurrences first, else word runs equal up to
    punctuation and spacing. Numbers and dates: word runs that parse to an equal value
    (the shortest such runs). Empty list when the value is not in the text.
    """
    if value is None or isinstance(value, (dict, list)):
        return []
    if kind == "number" or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        target = value
        hits = [(s, e) for s, e in word_ngrams(text, 4) if _num_eq(parse_number(text[s:e]), target)]
        return _minimal(hits)
    if kind == "date":
        runs = word_ngrams(text, 5)
        hits = [(s, e) for s, e in runs if parse_date(text[s:e]) == value]
        if not hits and is_iso_date(value):  # "Jan 30" says 2026-01-30 in 2026
            hits = [(s, e) for s, e in runs if parse_date(text[s:e], default_year=int(value[:4])) == value]
        return _minimal(hits)
    v = str(value).strip()
    if not v:
        return []
    low, vl = text.lower(), v.lower()
    hits = []
    start = low.find(vl)
    while start >= 0:
        hits.append((start, start + len(v)))
        start = low.find(vl, start + 1)
    if hits:
        return hits
    nv = _norm(v)
    if not nv:
        return []
    return _minimal([(s, e) for s, e in word_ngrams(text, 10) if _norm(text[s:e]) == nv])


def _num_eq(a: int | float | None, b: Any) -> bool:
    if a is None or isinstance(b, bool):
        return False
    try:
        return abs(float(a) - float(b)) < 1e-9
    except (TypeError, ValueError):
        return False


def _minimal(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Drop spans that contain another hit (keep "1,200", not "1,200 units")."""
    return [
        (s, e) for s, e in spans if not any((s2, e2) != (s, e) and s <= s2 and e2 <= e for s2, e2 in spans)
    ]


# a clause that starts inside a span and is no part of the value:
# "221B Baker Street, Berkeley, CA, USA[, and I can wait up to 600]"
_RUN_ON = re.compile(
    r"\s*[,;]?\s+(?:and|but|so|then|because|while|which|who|where|if|when)\s+"
    r"(?:i|i'm|i'll|we|you|he|she|they|it|will|would|can|could|should|please|also|am|is|are|was|"
    r"want|need|have|has|plan|like|let|make|then|also)\b"
    r"|\s*[,;]\s*(?:i|we|please|can you|could you)\b"
    r"|\s+(?:in|on|during|for|from|until|by)\s+(?:january|february|march|april|may|june|july|august|"
    r"september|october|november|december|next|this|the next|\d+\s+(?:days?|nights?|weeks?|months?|"
    r"hours?|minutes?|seconds?|people|persons|guests))\b",
    re.IGNORECASE,
)


def trim_run_on(text: str, start: int, end: int) -> int:
    """The end of ``text[start:end]`` with a trailing clause cut off (the span may run on)."""
    m = _RUN_ON.search(text, start + 1, end)
    if m is None or m.start() <= start:
        return end
    e = m.start()
    while e > start and text[e - 1] in " ,;":
        e -= 1
    return e if e > start else end


_CAP_WORD = re.compile(r"[A-Z0-9][\w'’.-]*", re.UNICODE)
_NOT_NAMES = {"I", "I'm", "I'd", "I'll", "A", "An", "The", "Can", "Could", "Would", "Please", "What", "How"}


def _is_name_word(word: str) -> bool:
    word = word.strip(_EDGE)
    return bool(word) and word not in _NOT_NAMES and (word[0].isupper() or word[0].isdigit())


def extend_name(text: str, start: int, end: int) -> tuple[int, int]:
    """A span inside a proper name or address widened to all of it.

    ``"Addison"`` in ``"from 2020 Addison Street, Berkeley, CA, USA, and"`` →
    ``"2020 Addison Street, Berkeley, CA, USA"``: runs of capitalised words and numbers
    around the span, and ``", Capitalised"`` parts after it (a city's state or country).
    Only for spans that start and end on such a word; never across sentence ends.
    """
    span = text[start:end].split()
    if not span or not _is_name_word(span[0]) or not _is_name_word(span[-1]):
        return start, end
    # left: preceding capitalised words (or a house number), not a sentence's first word
    s = start
    while span[0][0].isupper():
        m = re.search(r"(\S+)\s+$", text[:s])
        if m is None:
            break
        word = m.group(1)
        before = text[: m.start()].rstrip()
        if word[-1] in ",;:.!?" or not _is_name_word(word) or not before or before[-1] in ".!?:":
            break
        s = m.start(1)
    # right: following capitalised words, and ", Capitalised" parts
    e = end
    while True:
        m = re.match(r"(\s+|\s*,\s*)([^\s,]+)", text[e:])
        if m is None:
            break
        word = m.group(2).rstrip(_EDGE)
        if not word or not _is_name_word(word) or (word[0].isdigit() and "," in m.group(1)):
            break
        e = e + m.start(2) + len(word)
        if m.group(2) != word:  # the word ended in punctuation ("USA." / "(CA)")
            break
    return s, e
