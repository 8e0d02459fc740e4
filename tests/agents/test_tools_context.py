"""Tools from Python callables (schemas, validation, errors), MCP start failures, context and budgets."""

from __future__ import annotations

import asyncio
import enum
import json
import sys
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel

from smallfleet.agents import MCPServer, Skill, tool
from smallfleet.agents.context import (
    ContextPart,
    Retrieval,
    StaticText,
    StepOutput,
    build_context,
    chunk_text,
    count_tokens,
)
from smallfleet.agents.tools import FunctionTool, format_result, parse_docstring
from smallfleet.errors import ConfigError, UserError


class Priority(enum.Enum):
    LOW = "low"
    HIGH = "high"


class Address(BaseModel):
    street: str
    city: str


def create_ticket(
    title: str,
    tags: list[str],
    priority: Priority = Priority.LOW,
    channel: Literal["email", "chat"] = "email",
    due_days: int | None = None,
    address: Address | None = None,
    weight: float = 1.0,
    urgent: bool = False,
) -> dict[str, object]:
    """Open a support ticket.

    Longer explanation that is not part of the description.

    Args:
        title: A short title
            that goes on over two lines.
        tags (list[str]): Labels for the ticket.
        priority: How urgent it is.
        channel: Where the customer wrote from.

    Returns:
        The ticket.
    """
    return {
        "title": title,
        "tags": tags,
        "priority": priority,  # an Enum member: serialised by its value
        "channel": channel,
        "due_days": due_days,
        "city": address.city if address else None,
        "weight": weight,
        "urgent": urgent,
    }


def test_schema_from_type_hints_and_google_docstring() -> None:
    t = tool(create_ticket)
    assert t.name == "create_ticket" and t.description == "Open a support ticket."
    p = t.parameters
    assert p["type"] == "object" and p["required"] == ["title", "tags"]
    props = p["properties"]
    assert props["title"] == {"type": "string", "description": "A short title that goes on over two lines."}
    assert props["tags"]["type"] == "array" and props["tags"]["items"] == {"type": "string"}
    assert props["tags"]["description"] == "Labels for the ticket."
    assert props["channel"]["enum"] == ["email", "chat"] and props["channel"]["default"] == "email"
    assert p["$defs"]["Priority"]["enum"] == ["low", "high"]
    assert {"type": "null"} in props["due_days"]["anyOf"] and {"type": "integer"} in props["due_days"][
        "anyOf"
    ]
    assert p["$defs"]["Address"]["required"] == ["street", "city"]
    assert props["weight"]["type"] == "number" and props["urgent"]["type"] == "boolean"
    spec = t.spec().to_dict()
    assert spec["type"] == "function" and spec["function"]["name"] == "create_ticket"


def test_numpy_docstring() -> None:
    desc, params = parse_docstring(
        """Sum two numbers.

        Parameters
        ----------
        a : int
            The first
            number.
        b : int
            The second.

        Returns
        -------
        int
        """
    )
    assert desc == "Sum two numbers."
    assert params == {"a": "The first number.", "b": "The second."}


async def test_call_converts_validated_arguments() -> None:
    t = tool(create_ticket)
    out = await t.call(
        {
            "title": "x",
            "tags": ["a"],
            "priority": "high",
            "address": {"street": "s", "city": "Paris"},
            "due_days": 2,
        }
    )
    data = json.loads(out)
    assert data["priority"] == "high" and data["city"] == "Paris" and data["due_days"] == 2
    assert data["channel"] == "email"  # the default


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"title": "x"}, "'tags' is a required property"),
        ({"title": 3, "tags": []}, "title: 3 is not of type 'string'"),
        ({"title": "x", "tags": [], "channel": "fax"}, "channel: 'fax' is not one of ['email', 'chat']"),
        ({"title": "x", "tags": [], "address": {"street": "s"}}, "address"),
        ('{"title": ', "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
    ],
)
async def test_invalid_arguments_are_error_messages(arguments: object, expected: str) -> None:
    out = await tool(create_ticket).call(arguments)  # type: ignore[arg-type]
    assert out.startswith("Error: invalid arguments for create_ticket: ")
    assert expected in out


async def test_async_tools_and_failures() -> None:
    @tool(name="slow-echo", description="Echo after a pause.")
    async def echo(text: str, times: int = 1) -> str:
        await asyncio.sleep(0.01)
        return text * times

    assert echo.name == "slow-echo" and echo.description == "Echo after a pause."
    assert await echo.call('{"text": "ab", "times": 2}') == "abab"

    async def explode(x: int) -> int:
        raise KeyError("missing row")

    out = await FunctionTool(explode).call({"x": 1})
    assert out == "Error: explode failed: KeyError: 'missing row'"

    with pytest.raises(UserError, match="Tool name"):
        FunctionTool(explode, name="has spaces")


def test_format_result() -> None:
    assert format_result("plain") == "plain"
    assert format_result({"a": Priority.HIGH, "b": Address(street="s", city="c")}) == (
        '{"a": "high", "b": {"street": "s", "city": "c"}}'
    )
    long = format_result("x" * 30_000)
    assert len(long) < 20_100 and long.endswith("more characters]")


async def test_mcp_server_that_does_not_start_is_a_clear_error() -> None:
    server = MCPServer(sys.executable, ["-c", "import sys; sys.exit(3)"], name="dead", timeout=20)
    with pytest.raises(ConfigError, match="MCP server 'dead'"):
        await server.start()
    assert not server.started and server.tools == []


# ---------------------------------------------------------------- context


def test_chunk_text_by_paragraphs_and_size() -> None:
    text = "first para.\n\nsecond para.\n\n" + "word " * 100
    chunks = chunk_text(text, max_chars=120)
    assert chunks[0] == "first para.\n\nsecond para."  # small paragraphs merge
    assert all(len(c) <= 120 for c in chunks) and len(chunks) >= 5
    assert " ".join(chunks[1:]).split() == ["word"] * 100  # nothing lost when a long one is split


def test_budget_trims_lowest_priority_first() -> None:
    sources = [
        StaticText("A" * 400, name="rules", priority=2),  # 100 tokens
        StaticText("B" * 400, name="examples", priority=0),  # 100 tokens
        StaticText("C" * 400, name="notes", priority=1),  # 100 tokens
    ]
    assert [p.name for p in build_context(sources, "t")] == ["rules", "examples", "notes"]
    parts = build_context(sources, "t", max_tokens=250)
    assert [p.name for p in parts] == ["rules", "examples", "notes"]
    assert parts[0].text == "A" * 400 and parts[2].text == "C" * 400  # untouched
    assert parts[1].text.startswith("B") and parts[1].text.endswith("[trimmed]")
    assert sum(count_tokens(p.text) for p in parts) <= 250

    parts = build_context(sources, "t", max_tokens=150)
    assert [p.name for p in parts] == ["rules", "notes"]  # the lowest priority went first, whole
    assert parts[0].text == "A" * 400 and count_tokens(parts[1].text) <= 50

    words = build_context(sources, "t", max_tokens=2, tokenizer=lambda s: len(s.split()))
    assert [p.name for p in words] == ["rules", "notes"]  # one "word" each: the lowest priority goes


def test_step_output_source() -> None:
    source = StepOutput("lookup_order")
    assert source.name == "output of lookup_order"
    assert source.render("t", {"lookup_order": "shipped"}) == "shipped"
    assert build_context([source], "t", {}) == []  # nothing yet: no empty section


def test_retrieval_top_k(tmp_path: Path) -> None:
    (tmp_path / "accounts.md").write_text(
        "Reset your password from the sign-in page with the forgot password link."
    )
    (tmp_path / "shipping.md").write_text("We ship parcels within the EU; delivery takes two to five days.")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "refunds.txt").write_text(
        "Refunds are paid back to the card within five business days."
    )
    (tmp_path / "ignored.bin").write_text("password password password")
    r = Retrieval(tmp_path, k=2)
    hits = r.search("I forgot my password, how do I reset it?")
    assert len(hits) == 2 and hits[0][1] == "accounts.md" and hits[0][0] > hits[1][0]
    assert r.search("when will my money come back?")[0][1] == "sub/refunds.txt"
    text = r.render("how long does delivery take", {})
    assert text.startswith("[shipping.md]\n")
    with pytest.raises(UserError, match="does not exist"):
        Retrieval(tmp_path / "nope").search("x")


def test_skill_request_carries_context_and_schema() -> None:
    schema = {"type": "object", "properties": {"intent": {"type": "string"}}, "required": ["intent"]}
    skill = Skill(
        "triage",
        "Find the intent.",
        model="small",
        system_prompt="Answer with one intent.",
        context=[StaticText("Intents: refund, order_status.", name="labels"), StepOutput("lookup")],
        output_schema=schema,
        inputs={"language": {"type": "string"}},
    )
    assert skill.parameters()["properties"]["language"] == {"type": "string"}
    messages = skill.messages("where is it?", {"language": "en"}, {"lookup": "shipped"})
    system, user = messages[0].content, messages[1].content
    assert system.startswith("Answer with one intent.\n\n## labels\nIntents:")
    assert "## output of lookup\nshipped" in system
    assert user == 'where is it?\n\nInputs:\n{"language": "en"}'
    request = skill.request(messages, [])
    assert request.model == "small" and request.json_schema == schema and request.tools is None
    assert skill._check_output('{"intent": "refund"}') == '{"intent": "refund"}'
    assert skill._check_output('{"label": 1}').startswith(
        "Error: skill triage's answer breaks its output schema"
    )
    assert skill._check_output("refund").startswith("Error: skill triage answered text that is not JSON")


def test_context_part_is_plain_data() -> None:
    assert ContextPart("n", "t", 1) == ContextPart(name="n", text="t", priority=1)


def test_public_surface_and_no_heavy_imports() -> None:
    import subprocess

    import smallfleet.agents as agents

    classes = [n for n in dir(agents) if not n.startswith("_") and n[0].isupper()]
    assert sorted(agents.__all__) == sorted([*classes, "load_agent", "tool"])
    heavy = ("torch", "mcp", "transformers", "sentence_transformers", "httpx")
    code = f"import sys, smallfleet.agents; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
