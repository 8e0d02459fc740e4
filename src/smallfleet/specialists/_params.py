"""Describing and typing a JSON-schema property for the encoder specialists.

Both the tool caller (a tool's parameters) and the extractor (an object's fields)
turn a property into a *query* the encoder reads ("unit (string, one of: celsius,
fahrenheit): the temperature unit") and a *kind* that says how its value is
decided: a span of the text, a choice among values, or nothing we can do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from smallfleet.specialists._values import parse_bool, parse_date, parse_number, parse_time, split_list

__all__ = ["ABSENT", "Param", "coerce", "coerce_item", "humanise", "json_type"]

#: the choice that means "leave this optional value out"
ABSENT = "(not mentioned)"

# BFCL and Python-flavoured schemas write these; JSON Schema has the right-hand side.
_TYPE_ALIASES = {
    "str": "string", "int": "integer", "float": "number", "double": "number", "bool": "boolean",
    "dict": "object", "list": "array", "tuple": "array", "any": "string", "long": "integer",
}  # fmt: skip
_DATE_HINT = re.compile(r"yyyy-mm-dd|iso ?8601 date|\bdate\b.*\bformat\b", re.IGNORECASE)


def humanise(name: str) -> str:
    """``get_current_weather`` / ``getCurrentWeather`` → ``get current weather``."""
    s = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name)
    return re.sub(r"[_\-.\s]+", " ", s).strip().lower()


def json_type(schema: dict[str, Any]) -> str:
    """The schema's main JSON type (``"string"`` when it does not say), aliases resolved."""
    t = schema.get("type")
    if isinstance(t, list):
        t = next((x for x in t if x != "null"), "string")
    if t is None:
        if schema.get("enum"):
            v = schema["enum"][0]
            t = "boolean" if isinstance(v, bool) else "integer" if isinstance(v, int) else "string"
        elif "items" in schema:
            t = "array"
        elif "properties" in schema:
            t = "object"
        else:
            t = "string"
    return _TYPE_ALIASES.get(str(t), str(t))


@dataclass
class Param:
    """One property: how to ask for it, and how its value is decided.

    kind: ``span`` (a string copied from the text), ``number``, ``integer``, ``date``
    (a span normalised to ISO 8601), ``time`` (a span normalised to 24-hour ``HH:MM``,
    for a string whose pattern or description asks for that), ``array`` (several spans), ``enum`` and
    ``boolean`` (choices), ``other`` (objects and what else we cannot fill).
    """

    name: str
    schema: dict[str, Any]
    required: bool
    owner: str = ""  # the tool's name, or "" for an extractor's object
    default_year: int | None = None  # the year of a date said without one ("Jan 30")
    today: str | None = None  # what "today" is in the teacher's dates (ISO), for "tomorrow", "friday"

    @property
    def type(self) -> str:
        return json_type(self.schema)

    @property
    def enum(self) -> list[Any] | None:
        e = self.schema.get("enum")
        if isinstance(e, list) and e and all(isinstance(v, (str, int, float, bool)) for v in e):
            return e
        return None

    @property
    def item_type(self) -> str:
        items = self.schema.get("items")
        return json_type(items) if isinstance(items, dict) else "string"

    @property
    def kind(self) -> str:
        t = self.type
        if self.enum is not None and t != "array":
            return "enum"
        if t == "boolean":
            return "boolean"
        if t in ("integer", "number"):
            return t
        if t == "string":
            fmt = self.schema.get("format")
            if fmt == "date" or _DATE_HINT.search(str(self.schema.get("description") or "")):
                return "date"
            if _asks_hh_mm(self.schema):
                return "time"
            return "span"
        if t == "array" and self.item_type in ("string", "integer", "number"):
            return "array"
        return "other"

    @property
    def choices(self) -> list[Any]:
        """The values a choice kind picks among (plus :data:`ABSENT` when optional)."""
        values: list[Any] = list(self.enum or []) if self.kind == "enum" else [True, False]
        return [*values, ABSENT] if not self.required else values

    def query(self) -> str:
        desc = str(self.schema.get("description") or "").strip()
        t = self.type if self.kind != "array" else f"list of {self.item_type}"
        head = f"{humanise(self.owner)} - " if self.owner else ""
        q = f"{head}{humanise(self.name)} ({t})"
        return f"{q}: {desc}" if desc else q

    def choice_query(self, value: Any) -> str:
        if value == ABSENT:
            return f"{self.query()} = {ABSENT}"
        shown = "true" if value is True else "false" if value is False else str(value)
        return f"{self.query()} = {shown}"


_TIME_HINT = re.compile(r"\bhh:mm\b(?!:ss)", re.IGNORECASE)


def _asks_hh_mm(schema: dict[str, Any]) -> bool:
    """A string schema for 24-hour ``HH:MM`` times: its pattern takes "18:30" and "09:05" but not
    "18:30:00" or "1830", or its description says ``HH:MM``."""
    pattern = schema.get("pattern")
    if isinstance(pattern, str):
        try:
            rx = re.compile(pattern)
        except re.error:
            return False
        return all(rx.search(t) for t in ("18:30", "09:05")) and not any(
            rx.search(t) for t in ("18:30:00", "1830", "x")
        )
    return bool(_TIME_HINT.search(str(schema.get("description") or "")))


def coerce(text: str, param: Param) -> Any:
    """The span ``text`` as the value ``param`` wants, or None when it cannot be read as one."""
    kind = param.kind
    if kind == "integer":
        v = parse_number(text)
        return int(v) if v is not None and float(v).is_integer() else None
    if kind == "number":
        return parse_number(text)
    if kind == "date":
        return parse_date(text, default_year=param.default_year, today=param.today) or text
    if kind == "time":
        return parse_time(text)
    if kind == "boolean":
        return parse_bool(text)
    if kind == "array":
        items = [coerce_item(p, param.item_type) for p in split_list(text) or [text]]
        return [v for v in items if v is not None] or None
    return text


def coerce_item(text: str, item_type: str) -> Any:
    """One list item as ``item_type`` (string, integer or number), or None."""
    if item_type == "string":
        return text
    v = parse_number(text)
    if item_type == "integer":
        return int(v) if v is not None and float(v).is_integer() else None
    return v
