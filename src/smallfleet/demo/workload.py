"""A simulated week of an online shop's support agent, as the gateway would have recorded it.

``generate_workload(calls, seed, week)`` gives :class:`WorkloadCall` objects: the
agent step's OpenAI request, the large model's (the teacher's) response, the
true task type (for tests only; it is never put into the traces), when it
happened, how long it took, how many tokens it used and what it cost at gpt-4o
list prices. Week 2 is a drifted week: ``track_shipment`` is renamed
``get_shipping_status`` (its ``order_id`` parameter becomes ``order_number``) and
a new task type (``return_label``) appears.

Guarantees (documented in docs/demo-workload.md):

* deterministic for ``(calls, seed, week)``;
* no user text is ever emitted twice, within a week or (for the same ``seed`` and
  ``calls``) across weeks 1 and 2, so any split of the traffic, e.g. by time,
  has no text in both its train and its test part;
* about 2% of routine answers are wrong (``teacher_wrong``), still in a valid shape.
"""

from __future__ import annotations

import calendar
import json
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from smallfleet.demo import data as D

if TYPE_CHECKING:
    from smallfleet.specialists.base import Example
    from smallfleet.store.records import TraceRecord
    from smallfleet.store.trace_store import TraceStore

__all__ = [
    "INTENTS",
    "TASK_TYPES",
    "TOOLS",
    "URGENCY_LEVELS",
    "WORKLOAD_NAME",
    "TaskType",
    "WorkloadCall",
    "generate_workload",
    "task_mix",
    "to_examples",
    "to_trace_records",
    "week_start",
    "write_to_store",
]

WORKLOAD_NAME = "support-agent"
REQUEST_MODEL = "gpt-4o"
RESPONSE_MODEL = "gpt-4o-2024-08-06"
#: gpt-4o list prices, USD per 1M tokens (input, output), as of 2026-01.
PRICE_PER_M = (2.50, 10.00)
TEACHER_WRONG_RATE = 0.02

INTENTS = [
    "order_status", "refund_request", "change_address", "cancel_order",
    "product_question", "payment_problem", "account_access", "complaint",
]  # fmt: skip
URGENCY_LEVELS = ["low", "normal", "high", "urgent"]
REFUND_REASONS = list(D.REFUND_REASONS)
RETURN_METHODS = list(D.RETURN_METHODS)
CARRIER_IDS = list(D.CARRIERS)


@dataclass(frozen=True)
class TaskType:
    """One kind of agent step: its output shape, whether it is routine, its share of a week's calls."""

    name: str
    output: str  # "label" | "json" | "tool_call" | "text"
    routine: bool
    share: float
    tool: str | None = None


TASK_TYPES: dict[str, TaskType] = {
    t.name: t
    for t in [
        TaskType("intent", "label", True, 0.21),
        TaskType("urgency", "label", True, 0.08),
        TaskType("extract", "json", True, 0.15),
        TaskType("lookup_order", "tool_call", True, 0.10, "lookup_order"),
        TaskType("track_shipment", "tool_call", True, 0.12, "track_shipment"),
        TaskType("issue_refund", "tool_call", True, 0.08, "issue_refund"),
        TaskType("update_address", "tool_call", True, 0.08, "update_address"),
        TaskType("troubleshoot", "text", False, 0.07),
        TaskType("policy", "text", False, 0.06),
        TaskType("complaint", "text", False, 0.05),
        # week 2 only
        TaskType("shipping_status", "tool_call", True, 0.12, "get_shipping_status"),
        TaskType("return_label", "tool_call", True, 0.06, "create_return_label"),
    ]
}


def task_mix(week: int = 1) -> dict[str, float]:
    """The share of each task type in ``week`` (1: the normal week, 2: the drifted week)."""
    if week not in (1, 2):
        raise ValueError(f"week must be 1 or 2, not {week!r}")
    mix = {n: t.share for n, t in TASK_TYPES.items() if n not in ("shipping_status", "return_label")}
    if week == 2:
        mix["shipping_status"] = mix.pop("track_shipment")
        scale = 1 - TASK_TYPES["return_label"].share
        mix = {n: s * scale for n, s in mix.items()}
        mix["return_label"] = TASK_TYPES["return_label"].share
    return mix


# ---------------------------------------------------------------- tools and schemas

_ORDER_ID = {"type": "string", "description": "The order id, e.g. ORD-48213.", "pattern": "^ORD-[0-9]{5}$"}


def _tool(name: str, description: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": properties,
                "required": required,
                "additionalProperties": False,
            },
        },
    }


_CARRIER = {"type": "string", "enum": CARRIER_IDS, "description": "The carrier, if the customer named one."}

TOOLS: dict[str, dict[str, Any]] = {
    "lookup_order": _tool(
        "lookup_order", "Fetch an order: items, totals, payment and fulfilment status.",
        {"order_id": _ORDER_ID}, ["order_id"],
    ),
    "track_shipment": _tool(
        "track_shipment", "Get the carrier's tracking status and delivery estimate for an order.",
        {"order_id": _ORDER_ID, "carrier": _CARRIER}, ["order_id"],
    ),
    "get_shipping_status": _tool(
        "get_shipping_status", "Shipping status and delivery estimate of an order, from the carrier.",
        {"order_number": _ORDER_ID, "carrier": _CARRIER}, ["order_number"],
    ),
    "issue_refund": _tool(
        "issue_refund", "Refund money for an order to the original payment method.",
        {
            "order_id": _ORDER_ID,
            "amount": {"type": "number", "exclusiveMinimum": 0, "description": "Amount to refund."},
            "reason": {"type": "string", "enum": REFUND_REASONS, "description": "Why they want a refund."},
        },
        ["order_id", "amount", "reason"],
    ),
    "update_address": _tool(
        "update_address", "Change the delivery address of an order that has not shipped yet.",
        {
            "order_id": _ORDER_ID,
            "street": {"type": "string", "description": "Street and house number."},
            "city": {"type": "string"},
            "postal_code": {"type": "string"},
            "country": {"type": "string", "description": "Country name in English."},
        },
        ["order_id", "street", "city", "postal_code", "country"],
    ),
    "create_return_label": _tool(
        "create_return_label", "Create a prepaid return label, for a courier pickup or a drop-off point.",
        {"order_id": _ORDER_ID, "method": {"type": "string", "enum": RETURN_METHODS}},
        ["order_id", "method"],
    ),
}  # fmt: skip

_NULLABLE = ["string", "null"]
EXTRACT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "order_id": {"type": _NULLABLE},
        "email": {"type": _NULLABLE},
        "product": {"type": _NULLABLE},
        "amount": {"type": ["number", "null"]},
        "date": {"type": _NULLABLE, "description": "YYYY-MM-DD"},
    },
    "required": ["order_id", "email", "product", "amount", "date"],
    "additionalProperties": False,
}
EXTRACT_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "ticket_entities", "strict": True, "schema": EXTRACT_SCHEMA},
}

# ---------------------------------------------------------------- system prompts

_AGENT = (
    "You are Nora, the customer support assistant of Northwind Goods, an online shop for home, "
    "tech and outdoor products. Be concise, friendly and accurate. Today is {today}.\n"
    "Rules: never ask for full card numbers or passwords; never promise a delivery date the tools "
    "do not confirm; refunds above 500 EUR and legal threats go to a human agent; answer in the "
    "customer's language; use the tools for anything about a specific order instead of guessing; "
    "order ids look like ORD-12345.\n\n"
)
_INTENT_DEFINITIONS = {
    "order_status": "where an order or parcel is, whether it was processed, shipped or delivered",
    "refund_request": "the customer wants money back for an order or an item",
    "change_address": "the delivery address of an order must change",
    "cancel_order": "the customer wants to cancel an order",
    "product_question": "questions about a product before or after buying (size, stock, features)",
    "payment_problem": "charges, failed payments, invoices, vouchers not applied",
    "account_access": "login, password, email, personal data and account settings",
    "complaint": "the customer is angry or disappointed about the service as a whole",
}
_HANDBOOK = "\n".join(f"- {topic}: {answers[0]}" for topic, answers in D.POLICY_ANSWERS.items())
SYSTEM_PROMPTS: dict[str, str] = {
    "intent": (
        "You are the triage step of the Northwind Goods support agent. Read the customer's message and "
        "classify its intent into exactly one of these labels:\n"
        + "".join(f"- {k}: {v}\n" for k, v in _INTENT_DEFINITIONS.items())
        + "When several apply, choose the one the customer most needs handled now; an angry message "
        "about one specific request still gets that request's label unless it is about the service as "
        "a whole. Answer with the label only, no punctuation."
    ),
    "urgency": (
        "You are the prioritisation step of the Northwind Goods support agent. Rate how urgent the "
        "customer's message is, considering deadlines, money at stake and how upset they are.\n"
        "- low: general questions, nothing is at stake yet\n"
        "- normal: a specific order or account needs attention, no deadline\n"
        "- high: money was taken wrongly, the customer is upset, or something is time-sensitive\n"
        "- urgent: high, and the customer asks for it to be handled now\n"
        "Answer with exactly one word: low, normal, high or urgent."
    ),
    "extract": (
        "You extract structured data from customer messages for the Northwind Goods ticketing system. "
        "Return the order id, the customer's email, the product, the amount (a number, without currency) "
        "and the date (YYYY-MM-DD; dates without a year are in the current year, 03/04/2026 is March 4). "
        "Use null for anything the message does not mention. The order id is the ORD-number as written; "
        "the email exactly as written; the product as the customer names it, without articles; the "
        "amount as a plain number with a dot as decimal separator (12,50 EUR is 12.5). Never invent "
        "values and never add fields."
    ),
    "lookup_order": _AGENT
    + "The customer asks about an order. Look it up with lookup_order before answering.",
    "track_shipment": _AGENT
    + "The customer asks where a delivery is. Call track_shipment for the order; pass "
    "the carrier only when the customer names it.",
    "shipping_status": _AGENT + "The customer asks where a delivery is. Call get_shipping_status for the "
    "order; pass the carrier only when the customer names it.",
    "issue_refund": _AGENT + "The customer wants money back. Issue the refund with issue_refund, using the "
    "amount they paid and the reason that fits best.",
    "update_address": _AGENT + "The customer wants to change a delivery address. Call update_address with "
    "the new address exactly as given.",
    "return_label": _AGENT + "The customer wants to return an order. Create a return label with "
    "create_return_label, as a pickup or drop-off as they prefer.",
    "troubleshoot": _AGENT + "The customer has a technical problem with a product. Help them troubleshoot "
    "it step by step, most likely fix first, and offer a repair or replacement if nothing helps.",
    "policy": _AGENT + "Answer the customer's question about our policies using only the handbook "
    "below.\n\nHandbook:\n" + _HANDBOOK,
    "complaint": _AGENT + "The customer is upset. Respond with empathy, take ownership, and say "
    "concretely what you are doing about it. Never blame the customer.",
}
STEP_TOOLS: dict[str, list[str]] = {
    "lookup_order": ["lookup_order"],
    "track_shipment": ["track_shipment", "lookup_order"],
    "shipping_status": ["get_shipping_status", "lookup_order"],
    "issue_refund": ["issue_refund", "lookup_order"],
    "update_address": ["update_address"],
    "return_label": ["create_return_label", "lookup_order"],
}
_URGENCY_BASE = {
    "product_question": 0, "account_access": 1, "order_status": 1, "change_address": 1,
    "cancel_order": 1, "refund_request": 1, "payment_problem": 2, "complaint": 2,
}  # fmt: skip

# ---------------------------------------------------------------- the call


@dataclass
class WorkloadCall:
    """One recorded call of the agent to the large model."""

    id: str
    created_at: float
    task_type: str
    request: dict[str, Any]
    response: dict[str, Any]
    latency_ms: float
    input_tokens: int
    output_tokens: int
    cost_usd: float
    teacher_wrong: bool = False
    template: str = ""
    workload: str = WORKLOAD_NAME
    truth: Any = field(default=None, repr=False)  # the right answer, where the teacher was wrong

    @property
    def user_text(self) -> str:
        return self.request["messages"][-1]["content"]


# ---------------------------------------------------------------- time


def week_start(week: int = 1) -> float:
    """Unix time of the Monday 00:00 UTC that starts ``week`` (week 1: 2026-03-02)."""
    return float(calendar.timegm((2026, 3, 2, 0, 0, 0))) + (week - 1) * 7 * 86400


_HOURS = [0.15, 0.1, 0.08, 0.08, 0.1, 0.2, 0.4, 0.8, 1.2, 1.6, 1.8, 1.8,
          1.5, 1.6, 1.7, 1.7, 1.5, 1.3, 1.2, 1.3, 1.4, 1.1, 0.7, 0.35]  # fmt: skip
_DAYS = [1.1, 1.05, 1.0, 1.0, 0.95, 0.75, 0.8]


def _times(rng: random.Random, n: int, week: int) -> list[float]:
    cum, total = [], 0.0
    for d in _DAYS:
        for h in _HOURS:
            total += d * h
            cum.append(total)
    start = week_start(week)
    bins = rng.choices(range(168), cum_weights=cum, k=n)
    return sorted(start + b * 3600 + rng.random() * 3600 for b in bins)


# ---------------------------------------------------------------- slots and noise

_SLOT = re.compile(r"(\{[a-z_]+\})")


def _ordinal(n: int) -> str:
    suffix = "th" if 11 <= n % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _date_text(rng: random.Random, d: date) -> str:
    month, mon = d.strftime("%B"), d.strftime("%b")
    return rng.choice(
        [
            f"{month} {_ordinal(d.day)}", f"{d.day} {month}", f"{d.month:02d}/{d.day:02d}/{d.year}",
            d.isoformat(), f"{mon} {d.day}", f"{month} {d.day}, {d.year}",
            f"the {_ordinal(d.day)} of {month}",
        ]
    )  # fmt: skip


def _amount_text(rng: random.Random, value: float) -> str:
    whole = value == int(value)
    s = f"{int(value)}" if whole and rng.random() < 0.6 else f"{value:.2f}"
    comma = s.replace(".", ",")
    return rng.choice(
        [f"${s}", f"{s} USD", f"€{s}", f"{comma} EUR", f"{s} euros", f"EUR {s}", f"{s} dollars", f"USD {s}"]
    )


def _postal(rng: random.Random, pattern: str) -> str:
    out = []
    for ch in pattern:
        if ch == "#":
            out.append(str(rng.randrange(10)))
        elif ch == "A":
            out.append(rng.choice("ABCDEFGHJKLMNPRSTUVWXYZ"))
        else:
            out.append(ch)
    return "".join(out)


def _email(rng: random.Random, first: str, last: str) -> str:
    user = rng.choice(
        [f"{first}.{last}", f"{first}{last[0]}", f"{first[0]}{last}",
         f"{first}_{last}{rng.randrange(10, 99)}", f"{first}{rng.randrange(1970, 2006)}",
         f"{last}.{first[0]}"]
    )  # fmt: skip
    return f"{user.lower()}@{rng.choice(D.EMAIL_DOMAINS)}"


def _order_id(rng: random.Random) -> str:
    return f"ORD-{rng.randrange(10000, 100000)}"


@dataclass
class _Slots:
    """Values for every slot a phrasing may use, with the canonical form the teacher answers with."""

    text: dict[str, str]
    value: dict[str, Any]


def _slots(rng: random.Random, today: date) -> _Slots:
    first, last = rng.choice(D.FIRST_NAMES), rng.choice(D.LAST_NAMES)
    city, country, pattern = rng.choice(D.CITIES)
    n = rng.randrange(1, 200)
    street_name = rng.choice(D.STREET_NAMES)
    street = f"{n} {street_name}" if rng.random() < 0.5 else f"{street_name} {n}"
    amount = round(rng.uniform(5, 400), 2) if rng.random() < 0.7 else float(rng.randrange(5, 400))
    when = today - timedelta(days=rng.randrange(1, 40))
    carrier = rng.choice(CARRIER_IDS)
    reason = rng.choice(REFUND_REASONS)
    method = rng.choice(RETURN_METHODS)
    problem = rng.choice(list(D.PROBLEMS))
    v: dict[str, Any] = {
        "order_id": _order_id(rng), "email": _email(rng, first, last), "product": rng.choice(D.PRODUCTS),
        "amount": amount, "date": when.isoformat(), "carrier": carrier, "street": street, "city": city,
        "postal": _postal(rng, pattern), "country": country, "reason": reason, "method": method,
        "device": rng.choice(D.DEVICES), "problem": problem, "first": first, "last": last,
    }  # fmt: skip
    t = {k: str(x) for k, x in v.items()}
    t.update(
        amount=_amount_text(rng, amount),
        date=_date_text(rng, when),
        carrier=D.CARRIERS[carrier],
        reason_text=rng.choice(D.REFUND_REASONS[reason]),
        method_text=rng.choice(D.RETURN_METHODS[method]),
        symptom=rng.choice(D.PROBLEMS[problem][0]),
        name=f"{first} {last}",
        days=str(rng.randrange(5, 30)),
    )
    return _Slots(t, v)


def _typo(rng: random.Random, word: str) -> str:
    i = rng.randrange(1, len(word) - 2)
    if rng.random() < 0.5:
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    return word[:i] + word[i + 1 :]


def _noisy_template(rng: random.Random, template: str, shout: bool = False) -> str:
    """Typos, casing and punctuation noise on the literal words of a template (slots stay intact)."""
    parts = _SLOT.split(template)
    literal = [i for i, p in enumerate(parts) if not _SLOT.fullmatch(p)]
    if rng.random() < 0.18:
        words = [(i, m) for i in literal for m in re.finditer(r"[A-Za-z]{5,}", parts[i])]
        if words:
            i, m = rng.choice(words)
            parts[i] = parts[i][: m.start()] + _typo(rng, m.group()) + parts[i][m.end() :]
    r = rng.random()
    if r < 0.12:
        parts = [p if _SLOT.fullmatch(p) else p.lower() for p in parts]
    elif shout and r < 0.3:
        parts = [p if _SLOT.fullmatch(p) else p.upper() for p in parts]
    out = "".join(parts)
    if rng.random() < 0.15:
        out = out.rstrip(".!?")
    elif shout and rng.random() < 0.3:
        out = out.rstrip(".!") + "!!!"
    return out


def _fill(template: str, s: _Slots) -> str:
    return _SLOT.sub(lambda m: s.text[m.group()[1:-1]], template)


@dataclass
class _Message:
    text: str
    template: str
    urgent: bool


def _message(rng: random.Random, pool: str, templates: Sequence[str], s: _Slots) -> _Message:
    """A customer message from a phrasing: noise, slots, and optional greeting, extras, urgency, sign-off."""
    k = rng.randrange(len(templates))
    body = _fill(_noisy_template(rng, templates[k], shout=pool == "complaint"), s)
    parts = []
    if rng.random() < 0.3:
        parts.append(rng.choice(D.GREETINGS))
    parts.append(body)
    if rng.random() < 0.25:
        parts.append(rng.choice(D.EXTRA_SENTENCES))
    urgent = rng.random() < 0.22
    if urgent:
        parts.insert(len(parts) - (rng.random() < 0.5), rng.choice(D.URGENCY_MARKERS))
    if rng.random() < 0.2:
        parts.append(rng.choice(D.SIGN_OFFS).format(first=s.value["first"], last=s.value["last"]))
    sep = "\n" if rng.random() < 0.15 else " "
    return _Message(sep.join(parts), f"{pool}:{k}", urgent)


_INTENT_POOLS: dict[str, list[tuple[str, Sequence[str]]]] = {
    "order_status": [("lookup", D.LOOKUP), ("track", D.TRACK)],
    "refund_request": [("refund", D.REFUND)],
    "change_address": [("address", D.ADDRESS)],
    "cancel_order": [("cancel", D.CANCEL)],
    "product_question": [("product", D.PRODUCT_Q)],
    "payment_problem": [("payment", D.PAYMENT)],
    "account_access": [("account", D.ACCOUNT)],
    "complaint": [("complaint", D.COMPLAINT)],
}


def _customer_message(rng: random.Random, s: _Slots) -> tuple[str, _Message]:
    intent = rng.choice(INTENTS)
    pool, templates = rng.choice(_INTENT_POOLS[intent])
    return intent, _message(rng, pool, templates, s)


# ---------------------------------------------------------------- the teacher's answers per task type

#: a draft: (message, answer) — answer is a label, a dict (JSON), (tool, args) or free text
_Draft = tuple[_Message, Any]


def _d_intent(rng: random.Random, s: _Slots) -> _Draft:
    intent, msg = _customer_message(rng, s)
    msg.template = f"intent/{msg.template}"
    return msg, intent


def _d_urgency(rng: random.Random, s: _Slots) -> _Draft:
    intent, msg = _customer_message(rng, s)
    msg.template = f"urgency/{msg.template}"
    return msg, URGENCY_LEVELS[min(3, _URGENCY_BASE[intent] + msg.urgent)]


def _d_extract(rng: random.Random, s: _Slots) -> _Draft:
    msg = _message(rng, "extract", D.EXTRACT, s)
    tpl = D.EXTRACT[int(msg.template.split(":")[1])]
    out = {k: (s.value[k] if "{" + k + "}" in tpl else None) for k in EXTRACT_SCHEMA["properties"]}
    return msg, out


def _d_lookup(rng: random.Random, s: _Slots) -> _Draft:
    return _message(rng, "lookup", D.LOOKUP, s), ("lookup_order", {"order_id": s.value["order_id"]})


def _track(tool: str, id_param: str) -> Callable[[random.Random, _Slots], _Draft]:
    def draft(rng: random.Random, s: _Slots) -> _Draft:
        msg = _message(rng, "track", D.TRACK, s)
        args = {id_param: s.value["order_id"]}
        if "{carrier}" in D.TRACK[int(msg.template.split(":")[1])]:
            args["carrier"] = s.value["carrier"]
        return msg, (tool, args)

    return draft


def _d_refund(rng: random.Random, s: _Slots) -> _Draft:
    args = {"order_id": s.value["order_id"], "amount": s.value["amount"], "reason": s.value["reason"]}
    return _message(rng, "refund", D.REFUND, s), ("issue_refund", args)


def _d_address(rng: random.Random, s: _Slots) -> _Draft:
    v = s.value
    args = {
        "order_id": v["order_id"], "street": v["street"], "city": v["city"],
        "postal_code": v["postal"], "country": v["country"],
    }  # fmt: skip
    return _message(rng, "address", D.ADDRESS, s), ("update_address", args)


def _d_return(rng: random.Random, s: _Slots) -> _Draft:
    args = {"order_id": s.value["order_id"], "method": s.value["method"]}
    return _message(rng, "return", D.RETURN_LABEL, s), ("create_return_label", args)


def _d_troubleshoot(rng: random.Random, s: _Slots) -> _Draft:
    msg = _message(rng, "troubleshoot", D.TROUBLESHOOT, s)
    device = s.value["device"]
    steps = rng.sample(D.PROBLEMS[s.value["problem"]][1], rng.randrange(3, 6))
    lines = [rng.choice(D.TROUBLESHOOT_OPENERS).format(device=device), ""]
    lines += [f"{i}. {step}" for i, step in enumerate(steps, 1)]
    lines += ["", rng.choice(D.TROUBLESHOOT_CLOSERS).format(device=device)]
    return msg, "\n".join(lines)


def _d_policy(rng: random.Random, s: _Slots) -> _Draft:
    msg = _message(rng, "policy", [q for _, q in D.POLICY], s)
    topic = D.POLICY[int(msg.template.split(":")[1])][0]
    answer = " ".join(
        [rng.choice(D.POLICY_OPENERS), rng.choice(D.POLICY_ANSWERS[topic]), rng.choice(D.POLICY_CLOSERS)]
    )
    return msg, answer


def _d_complaint(rng: random.Random, s: _Slots) -> _Draft:
    msg = _message(rng, "complaint", D.COMPLAINT, s)
    first = s.value["first"] if rng.random() < 0.5 else ""
    greeting = f"Dear {first}," if first else rng.choice(["Hello,", "Hi,", "Dear customer,"])
    body = [
        rng.choice(D.COMPLAINT_APOLOGIES), rng.choice(D.COMPLAINT_ACKS),
        *rng.sample(D.COMPLAINT_ACTIONS, rng.randrange(1, 3)), rng.choice(D.COMPLAINT_CLOSERS),
    ]  # fmt: skip
    return msg, f"{greeting}\n\n{' '.join(body)}\n\nKind regards,\nNora, Northwind Goods support"


_DRAFTS: dict[str, Callable[[random.Random, _Slots], _Draft]] = {
    "intent": _d_intent,
    "urgency": _d_urgency,
    "extract": _d_extract,
    "lookup_order": _d_lookup,
    "track_shipment": _track("track_shipment", "order_id"),
    "shipping_status": _track("get_shipping_status", "order_number"),
    "issue_refund": _d_refund,
    "update_address": _d_address,
    "return_label": _d_return,
    "troubleshoot": _d_troubleshoot,
    "policy": _d_policy,
    "complaint": _d_complaint,
}


def _corrupt(rng: random.Random, task: str, answer: Any) -> Any:
    """A wrong answer of the right shape: what a large model gets wrong now and then."""
    kind = TASK_TYPES[task].output
    if kind == "label":
        labels = INTENTS if task == "intent" else URGENCY_LEVELS
        return rng.choice([x for x in labels if x != answer])
    if kind == "json":
        out = dict(answer)
        present = [k for k, v in out.items() if v is not None] or ["order_id"]
        k = rng.choice(present)
        out[k] = {
            "order_id": _order_id(rng),
            "email": _email(rng, rng.choice(D.FIRST_NAMES), rng.choice(D.LAST_NAMES)),
            "product": rng.choice([p for p in D.PRODUCTS if p != out["product"]]),
            "amount": round((out["amount"] or 10.0) * 10, 2),
            "date": (date.fromisoformat(out["date"]) + timedelta(days=1)).isoformat()
            if out["date"]
            else None,
        }[k]
        return out
    tool, args = answer
    args = dict(args)
    if "reason" in args and rng.random() < 0.5:
        args["reason"] = rng.choice([r for r in REFUND_REASONS if r != args["reason"]])
    elif "method" in args and rng.random() < 0.5:
        args["method"] = next(m for m in RETURN_METHODS if m != args["method"])
    else:
        key = "order_number" if "order_number" in args else "order_id"
        args[key] = _order_id(rng)
    return tool, args


# ---------------------------------------------------------------- assembling OpenAI JSON


def _tokens(text: str) -> int:
    return max(1, round(len(text) / 4))


def _hex(rng: random.Random, n: int) -> str:
    return f"{rng.getrandbits(4 * n):0{n}x}"


def _request(task: str, user: str, today: date) -> dict[str, Any]:
    system = SYSTEM_PROMPTS[task].format(today=today.strftime("%A, %d %B %Y"))
    req: dict[str, Any] = {
        "model": REQUEST_MODEL,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
        "temperature": 0.2,
    }
    kind = TASK_TYPES[task].output
    if kind == "tool_call":
        req["tools"] = [TOOLS[t] for t in STEP_TOOLS[task]]
        req["tool_choice"] = "auto"
    elif kind == "json":
        req["response_format"] = EXTRACT_FORMAT
    elif kind == "label":
        req["max_tokens"] = 5
    return req


def _response(rng: random.Random, task: str, answer: Any, created: int, usage: tuple[int, int]) -> dict:
    kind = TASK_TYPES[task].output
    message: dict[str, Any] = {"role": "assistant", "content": None}
    finish = "stop"
    if kind == "tool_call":
        tool, args = answer
        message["tool_calls"] = [
            {
                "id": f"call_{_hex(rng, 24)}",
                "type": "function",
                "function": {"name": tool, "arguments": json.dumps(args, ensure_ascii=False)},
            }
        ]
        finish = "tool_calls"
    elif kind == "json":
        message["content"] = json.dumps(answer, ensure_ascii=False)
    else:
        message["content"] = answer
    p, c = usage
    return {
        "id": f"chatcmpl-{_hex(rng, 24)}",
        "object": "chat.completion",
        "created": created,
        "model": RESPONSE_MODEL,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c},
    }


def _output_text(task: str, answer: Any) -> str:
    kind = TASK_TYPES[task].output
    if kind == "tool_call":
        return answer[0] + json.dumps(answer[1])
    return json.dumps(answer) if kind == "json" else str(answer)


def _usage(req: dict[str, Any], task: str, answer: Any) -> tuple[int, int]:
    prompt = sum(_tokens(m["content"]) + 4 for m in req["messages"]) + 3
    if "tools" in req:
        prompt += _tokens(json.dumps(req["tools"]))
    if "response_format" in req:
        prompt += _tokens(json.dumps(req["response_format"]))
    completion = _tokens(_output_text(task, answer)) + (6 if TASK_TYPES[task].output == "tool_call" else 1)
    return prompt, completion


# ---------------------------------------------------------------- the generator


def _generate(calls: int, seed: int, week: int, seen: set[str]) -> list[WorkloadCall]:
    rng = random.Random(f"smallfleet-demo:{seed}:{week}")
    mix = task_mix(week)
    names, weights = list(mix), list(mix.values())
    out: list[WorkloadCall] = []
    for t in _times(rng, calls, week):
        task = rng.choices(names, weights=weights)[0]
        today = datetime.fromtimestamp(t, UTC).date()
        for _ in range(50):
            s = _slots(rng, today)
            msg, answer = _DRAFTS[task](rng, s)
            if msg.text not in seen:
                break
        else:  # pragma: no cover - 50 collisions in a row does not happen with these pools
            msg.text += f" (ref {_hex(rng, 6)})"
        seen.add(msg.text)
        wrong = TASK_TYPES[task].routine and rng.random() < TEACHER_WRONG_RATE
        truth = answer
        if wrong:
            answer = _corrupt(rng, task, answer)
        req = _request(task, msg.text, today)
        p, c = _usage(req, task, answer)
        ttft = rng.lognormvariate(6.45, 0.3) + 0.05 * p  # median ~630 ms before the first token
        latency = ttft + c * rng.uniform(14, 28)
        out.append(
            WorkloadCall(
                id=_hex(rng, 32),
                created_at=round(t, 3),
                task_type=task,
                request=req,
                response=_response(rng, task, answer, int(t), (p, c)),
                latency_ms=round(latency, 1),
                input_tokens=p,
                output_tokens=c,
                cost_usd=round((p * PRICE_PER_M[0] + c * PRICE_PER_M[1]) / 1e6, 8),
                teacher_wrong=wrong,
                template=msg.template,
                truth=truth if wrong else None,
            )
        )
    return out


def generate_workload(calls: int = 10_000, seed: int = 0, week: int = 1) -> list[WorkloadCall]:
    """``calls`` recorded calls of the shop's support agent over one simulated week, oldest first.

    ``week=2`` is the drifted week (a renamed tool, a new task type); its user texts
    never repeat week 1's for the same ``seed`` and ``calls``.
    """
    if calls < 0:
        raise ValueError(f"calls must be >= 0, not {calls}")
    task_mix(week)  # validates week
    seen: set[str] = set()
    if week == 2:
        seen = {c.user_text for c in _generate(calls, seed, 1, set())}
    return _generate(calls, seed, week, seen)


# ---------------------------------------------------------------- into smallfleet


def to_trace_records(calls: Sequence[WorkloadCall]) -> list[TraceRecord]:
    """The calls as the gateway would have stored them (route ``direct``, status ``ok``)."""
    from smallfleet.store.records import TraceRecord

    return [
        TraceRecord(
            id=c.id,
            created_at=c.created_at,
            workload=c.workload,
            model_requested=c.request["model"],
            model_served=c.request["model"],
            route="direct",
            request=c.request,
            response=c.response,
            tool_names=[t["function"]["name"] for t in c.request.get("tools", [])],
            input_tokens=c.input_tokens,
            output_tokens=c.output_tokens,
            latency_ms=c.latency_ms,
            cost_usd=c.cost_usd,
            status="ok",
            http_status=200,
        )
        for c in calls
    ]


def write_to_store(store: TraceStore, calls: Sequence[WorkloadCall], batch_size: int = 2000) -> int:
    """Write ``calls`` into ``store`` as traces, in batches; returns how many were written."""
    records = to_trace_records(calls)
    for i in range(0, len(records), batch_size):
        store.write_traces(records[i : i + batch_size])
    return len(records)


def to_examples(calls: Sequence[WorkloadCall]) -> list[Example]:
    """The calls as training examples (request, the teacher's response)."""
    from smallfleet.specialists.base import Example
    from smallfleet.types import ChatRequest, ChatResponse

    return [
        Example(ChatRequest.model_validate(c.request), ChatResponse.model_validate(c.response), trace_id=c.id)
        for c in calls
    ]
