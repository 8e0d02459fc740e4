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
    "is_iso_time",
    "learn_today",
    "parse_bool",
    "parse_date",
    "parse_number",
    "parse_time",
    "relative_date",
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


def parse_date(
    text: str, day_first: bool = False, default_year: int | None = None, today: str | None = None
) -> str | None:
    """The ISO 8601 date (``YYYY-MM-DD``) ``text`` writes, in a common format, else None.

    ``2024-03-05``, ``03/05/2024`` (month first unless ``day_first`` or the first number
    is over 12), ``5 March 2024``, ``5th of March, 2024``, ``March 5, 2024``, ``Mar. 5th '24``;
    with a ``default_year``, also a month and day without one (``Jan 30``, ``the 5th of March``);
    with ``today`` (ISO), also a date said relative to it (:func:`relative_date`).
    """
    if today is not None:
        rel = relative_date(text, today)
        if rel is not None:
            return rel
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


_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_FIXED_OFFSETS = {"today": 0, "tonight": 0, "tomorrow": 1, "tmrw": 1, "yesterday": -1,
                  "day after tomorrow": 2, "the day after tomorrow": 2}  # fmt: skip
_IN_N = re.compile(r"^in (?P<n>[a-z0-9]+(?: [a-z]+)?) (?P<unit>days?|weeks?)$")
_WEEKDAY = re.compile(r"^(?:(?:this|next|coming|this coming|on) )?(?P<wd>" + "|".join(_WEEKDAYS) + r")$")
_DAY_ALONE = re.compile(r"^(?:the )?(?P<day>\d{1,2})(?:st|nd|rd|th)$")


def date_offset(text: str) -> int | None:
    """Days from "today" that ``text`` says when that does not depend on the day (``"tomorrow"``: 1,
    ``"in 2 days"``: 2, ``"in a week"``: 7), else None."""
    s = " ".join(text.lower().strip().strip('.,;:!?()[]"').split())
    if s in _FIXED_OFFSETS:
        return _FIXED_OFFSETS[s]
    m = _IN_N.match(s)
    if m:
        n = 1 if m["n"] in ("a", "one") else _small_int(m["n"], 60)
        if n is not None:
            return n * (7 if m["unit"].startswith("week") else 1)
    return None


def relative_date(text: str, today: str) -> str | None:
    """The ISO date ``text`` says relative to ``today`` (ISO): ``"tomorrow"``, ``"in 3 days"``,
    ``"friday"`` / ``"next friday"`` (the next one to come after today), ``"the 23rd"`` (this
    month's, or next month's when it has passed), else None."""
    import datetime as dt

    try:
        base = dt.date.fromisoformat(today)
    except ValueError:
        return None
    off = date_offset(text)
    if off is not None:
        return (base + dt.timedelta(days=off)).isoformat()
    s = " ".join(text.lower().strip().strip('.,;:!?()[]"').split())
    m = _WEEKDAY.match(s)
    if m:
        ahead = (_WEEKDAYS.index(m["wd"]) - base.weekday() - 1) % 7 + 1
        return (base + dt.timedelta(days=ahead)).isoformat()
    m = _DAY_ALONE.match(s)
    if m:
        day = int(m["day"])
        y, mon = (base.year, base.month) if day >= base.day else (
            (base.year + 1, 1) if base.month == 12 else (base.year, base.month + 1)
        )  # fmt: skip
        return _iso(y, mon, day)
    return None


def learn_today(pairs: list[tuple[str, str]]) -> str | None:
    """What "today" was for a teacher, from (text, ISO date it answered) pairs: the date that most
    of the texts' fixed relative phrases ("tomorrow", "in 2 days") point back to; None without
    two that agree."""
    import datetime as dt
    from collections import Counter

    votes: Counter[str] = Counter()
    for text, value in pairs:
        try:
            v = dt.date.fromisoformat(value)
        except (TypeError, ValueError):
            continue
        seen = set()
        for s, e in word_ngrams(text, 4):
            off = date_offset(text[s:e])
            if off is not None:
                seen.add((v - dt.timedelta(days=off)).isoformat())
        votes.update(seen)
    if not votes:
        return None
    best, n = votes.most_common(1)[0]
    return best if n >= 2 and n >= 0.5 * sum(votes.values()) else None


def _iso(y: int, m: int, d: int) -> str | None:
    import datetime as dt

    try:
        return dt.date(y, m, d).isoformat()
    except ValueError:
        return None


ISO_TIME = re.compile(r"^(?:[01]\d|2[0-3]):[0-5]\d$")
_TIME_QUALIFIER = re.compile(
    r"^(?P<core>.*?)\s*(?P<q>a\.?\s?m\.?|p\.?\s?m\.?|o'?clock|hrs?|in the (?:morning|afternoon|evening)|"
    r"(?:at )?night|tonight|this (?:morning|afternoon|evening)|morning|afternoon|evening)$"
)
_TIME_HM = re.compile(r"(?P<h>\d{1,2})\s*(?:[:.h]|\s)\s*(?P<m>[0-5]\d)")
_TIME_REL = re.compile(
    r"(?P<n>half|quarter|a quarter|[a-z0-9]+(?: [a-z]+)?)(?: minutes?)? "
    r"(?P<dir>past|after|to|till|before) (?P<h>\S+)"
)


def is_iso_time(value: Any) -> bool:
    """``"18:30"``: a 24-hour ``HH:MM`` time."""
    return isinstance(value, str) and bool(ISO_TIME.match(value))


def _small_int(word: str, top: int) -> int | None:
    if re.fullmatch(r"\d{1,2}", word):
        v: int | float | None = int(word)
    else:
        v = _parse_number_words(word) if re.fullmatch(r"[a-z]+(?:[ -][a-z]+)?", word) else None
    if v is None or not float(v).is_integer() or not 0 <= v <= top:
        return None
    return int(v)


def parse_time(text: str) -> str | None:
    """The 24-hour ``HH:MM`` time ``text`` says, else None.

    ``"14:35"``, ``"2:35 p.m."``, ``"3 50 a.m."``, ``"17 30"``, ``"half past six in the evening"``
    (18:30), ``"quarter to 5"`` (04:45), ``"5 to 11 evening"`` (22:55), ``"noon"``, ``"7 pm"``, and
    an hour alone (``"12"``, ``"seven"``: as said, 12:00 and 07:00). The whole text must be the time.
    """
    s = " ".join(text.lower().strip().strip('.,;:!?()[]"').split())
    if s in ("noon", "midday", "12 noon", "twelve noon"):
        return "12:00"
    if s == "midnight":
        return "00:00"
    q = ""
    m = _TIME_QUALIFIER.match(s)
    if m and m["core"]:
        s, q = m["core"].strip(), m["q"]
    hm = _TIME_HM.fullmatch(s)
    rel = None if hm else _TIME_REL.fullmatch(s)
    if hm:
        h, mi = int(hm["h"]), int(hm["m"])
    elif rel:
        n = {"half": 30, "quarter": 15, "a quarter": 15}.get(rel["n"])
        n = n if n is not None else _small_int(rel["n"], 59)
        hour = _small_int(rel["h"], 24)
        if n is None or hour is None or n == 0:
            return None
        h, mi = (hour, n) if rel["dir"] in ("past", "after") else ((hour - 1) % 24, 60 - n)
    else:
        hour = _small_int(s, 24)
        if hour is None:
            return None
        h, mi = hour, 0
    if h > 24 or mi > 59:
        return None
    q = re.sub(r"^(?:in the|this|at) ", "", q).replace(".", "").replace(" ", "")
    if q.startswith("p") or q in ("afternoon", "evening", "night", "tonight"):
        if h < 12 and not (q == "night" and h < 6):  # "2 at night" is 02:00
            h += 12
    elif (q.startswith("a") or q == "morning") and h == 12:
        h = 0
    return f"{h % 24:02d}:{mi:02d}"


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


def find_value_spans(
    text: str, value: Any, kind: str = "string", today: str | None = None
) -> list[tuple[int, int]]:
    """Character spans of ``text`` that say ``value``; ``kind`` is "string", "number" or "date".

    Strings: exact case-insensitive occurrences first, else word runs equal up to
    punctuation and spacing. Numbers and dates: word runs that parse to an equal value
    (the shortest such runs); times (``kind="time"``): the longest runs that say it
    (``"half past six in the evening"`` for ``"18:30"``). Empty list when the value is not in the text.
    """
    if value is None or isinstance(value, (dict, list)):
        return []
    if kind == "time":
        hits = [(s, e) for s, e in word_ngrams(text, 6) if parse_time(text[s:e]) == value]
        return _maximal(hits)
    if kind == "number" or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        target = value
        hits = [(s, e) for s, e in word_ngrams(text, 4) if _num_eq(parse_number(text[s:e]), target)]
        return _minimal(hits)
    if kind == "date":
        runs = word_ngrams(text, 5)
        hits = [(s, e) for s, e in runs if parse_date(text[s:e]) == value]
        if not hits and is_iso_date(value):  # "Jan 30" says 2026-01-30 in 2026
            hits = [(s, e) for s, e in runs if parse_date(text[s:e], default_year=int(value[:4])) == value]
        if not hits and today is not None:  # "tomorrow", "friday", "the 23rd"
            hits = [(s, e) for s, e in runs if relative_date(text[s:e], today) == value]
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


def _maximal(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Drop spans inside another hit (keep "half past six in the evening", not "half past six")."""
    return [
        (s, e) for s, e in spans if not any((s2, e2) != (s, e) and s2 <= s and e <= e2 for s2, e2 in spans)
    ]


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
