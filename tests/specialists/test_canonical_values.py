"""Values the large model writes in a canonical form that is not a span of the text:
24-hour times ("half past six in the evening" → "18:30") and dates relative to the teacher's
"today" ("tomorrow" → the day after the date the teacher's answers point back to)."""

from __future__ import annotations

import pytest

from smallfleet.specialists._fill import candidates, param_item, span_decision
from smallfleet.specialists._params import Param
from smallfleet.specialists._spans import Span, SpanResult
from smallfleet.specialists._values import learn_today, parse_time, relative_date
from smallfleet.specialists.catalog import infer_schema


@pytest.mark.parametrize(
    ("said", "time"),
    [
        ("14:35", "14:35"),
        ("2:35 p.m.", "14:35"),
        ("3 50 a.m.", "03:50"),
        ("17 30", "17:30"),
        ("half past six in the evening", "18:30"),
        ("quarter to 5", "04:45"),
        ("5 to 11 evening", "22:55"),
        ("10 past 1 afternoon", "13:10"),
        ("twenty past seven pm", "19:20"),
        ("noon", "12:00"),
        ("12 am", "00:00"),
        ("2 at night", "02:00"),
        ("11 at night", "23:00"),
        ("9pm", "21:00"),
        ("12", "12:00"),
    ],
)
def test_times_are_read_in_24_hour_form(said: str, time: str) -> None:
    assert parse_time(said) == time


@pytest.mark.parametrize("said", ["the", "2022", "at 7", "25:00", "7:75", "quarter", "half past"])
def test_what_is_not_a_time_is_none(said: str) -> None:
    assert parse_time(said) is None


def test_relative_dates_against_the_teachers_today() -> None:
    today = "2022-03-15"  # a Tuesday
    assert relative_date("tomorrow", today) == "2022-03-16"
    assert relative_date("in 2 days", today) == "2022-03-17"
    assert relative_date("in a week", today) == "2022-03-22"
    assert relative_date("Friday", today) == "2022-03-18"
    assert relative_date("next tuesday", today) == "2022-03-22"  # the next one to come
    assert relative_date("the 23rd", today) == "2022-03-23"
    assert relative_date("12th", today) == "2022-04-12"  # passed this month: next month's
    assert relative_date("may", today) is None
    # "today" learned from the answers: "tomorrow" answered 16 March, "in 2 days" the 17th
    pairs = [
        ("book it for tomorrow", "2022-03-16"),
        ("in 2 days please", "2022-03-17"),
        ("on 3 May", "2022-05-03"),
    ]
    assert learn_today(pairs) == "2022-03-15"
    assert learn_today([("tomorrow", "2022-03-16")]) is None  # one vote is not enough


def test_a_time_field_is_taught_and_read_as_the_teacher_writes_it() -> None:
    assert infer_schema(["18:30", "09:05", "12:00"]).get("pattern") == r"^\d{2}:\d{2}$"
    prm = Param("time", {"type": "string", "pattern": r"^\d{2}:\d{2}$"}, False)
    assert prm.kind == "time"
    text = "can we have dinner at half past six in the evening, or 7 pm?"
    assert [text[s:e] for s, e in candidates(prm, text) or []] == ["half past six in the evening", "7 pm"]
    item = param_item(prm, ["18:30"], text)
    assert item is not None and [text[s:e] for s, e in item.spans] == ["half past six in the evening"]
    # a span the model stops short of the qualifier still reads the whole time
    res = SpanResult([Span(22, 35, text[22:35], 0.9)], 0.05, None)
    assert text[22:35] == "half past six" and span_decision(prm, res, text).values == ["18:30"]


def test_a_relative_date_is_taught_and_read_against_today() -> None:
    prm = Param("date", {"type": "string", "format": "date"}, False, default_year=2022, today="2022-03-15")
    text = "can I move it to tomorrow or friday, or Dec 8th?"
    assert [text[s:e] for s, e in candidates(prm, text) or []] == ["Dec 8th", "tomorrow", "friday"]
    item = param_item(prm, ["2022-03-18"], text)
    assert item is not None and [text[s:e] for s, e in item.spans] == ["friday"]
    s = text.index("tomorrow")
    res = SpanResult([Span(s, s + 8, "tomorrow", 0.9)], 0.05, None)
    assert span_decision(prm, res, text).values == ["2022-03-16"]
    without = Param("date", {"type": "string", "format": "date"}, False)
    assert param_item(without, ["2022-03-18"], text) is None  # no "today": not a span
