"""ModelRegistry: lazy aliases, 'did you mean', fallback chains, in-process models."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from smallfleet.config import load_settings
from smallfleet.errors import ConfigError, ModelNotFound
from smallfleet.models.base import ChatModel
from smallfleet.models.openai_http import OpenAICompatible
from smallfleet.models.registry import ModelRegistry
from smallfleet.testing import Reply, ScriptedUpstream
from smallfleet.types import ChatRequest, ChatResponse


class Echo(ChatModel):
    """An in-process model: answers with the last user message."""

    supports_tools = True

    def __init__(self) -> None:
        self.closed = False

    async def complete(self, request: ChatRequest) -> ChatResponse:
        return ChatResponse.of_text("echo", request.last_user_text())

    async def aclose(self) -> None:
        self.closed = True


@pytest.fixture
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream() as up:
        yield up


def settings(models: dict[str, Any]) -> Any:
    return load_settings(overrides={"models": models}, env={})


REQ = ChatRequest.parse({"model": "x", "messages": [{"role": "user", "content": "ping"}]})


def test_lazy_nothing_built_or_connected(upstream: ScriptedUpstream, tmp_path: Path) -> None:
    s = settings(
        {
            # building this one would fail (its key variable is unset): reading it must not build it
            "remote": {"backend": "openai", "base_url": upstream.url, "api_key_env": "SF_REGISTRY_UNSET_KEY"},
            "tuned": {"backend": "specialist", "path": str(tmp_path / "no-such-specialist")},
            "tiny": {"backend": "local", "model": str(tmp_path / "no-such-model")},
        }
    )
    reg = ModelRegistry(s)
    assert reg.aliases() == ["remote", "tiny", "tuned"]
    assert reg.capabilities("remote") == {"streams": True, "tools": True, "json_schema": True}
    assert reg.capabilities("tuned")["tools"] is True
    assert set(reg.capabilities("tiny")) == {"streams", "tools", "json_schema"}
    assert reg.chain("remote") == ["remote"]
    assert "remote" in reg and "nothing" not in reg
    assert reg._built == {}
    assert upstream.requests == []
    # only get() builds, and only then does configuration trouble surface
    with pytest.raises(ConfigError, match="SF_REGISTRY_UNSET_KEY"):
        reg.get("remote")


async def test_get_builds_once_and_talks_to_the_endpoint(
    upstream: ScriptedUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SF_REGISTRY_KEY", "sk-registry")
    reg = ModelRegistry(
        settings(
            {"remote": {"base_url": upstream.url, "backend": "openai", "api_key_env": "SF_REGISTRY_KEY"}}
        )
    )
    upstream.push(Reply.text("pong"))
    model = reg.get("remote")
    assert isinstance(model, OpenAICompatible)
    assert reg.get("remote") is model
    assert upstream.requests == []
    resp = await model.complete(REQ)
    assert resp.text == "pong"
    assert upstream.requests[-1]["model"] == "remote"  # the alias is the upstream name by default
    assert upstream.headers[-1]["authorization"] == "Bearer sk-registry"
    await reg.aclose()
    assert reg._built == {}


def test_unknown_alias_did_you_mean() -> None:
    reg = ModelRegistry(settings({"gpt-4o-mini": {"backend": "openai"}, "local-qwen": {"backend": "openai"}}))
    for call in (reg.get, reg.capabilities, reg.chain):
        with pytest.raises(ModelNotFound) as ei:
            call("gpt-4o-mni")
        assert "Did you mean 'gpt-4o-mini'?" in ei.value.message
        assert "local-qwen" in ei.value.message  # the known ones are listed
        assert ei.value.status_code == 404
    with pytest.raises(ModelNotFound) as ei:
        reg.get("zzz")
    assert "Did you mean" not in ei.value.message


def test_unknown_alias_with_no_models() -> None:
    with pytest.raises(ModelNotFound, match="none configured"):
        ModelRegistry(settings({})).get("gpt")


def test_fallback_chains() -> None:
    reg = ModelRegistry(
        settings(
            {
                "a": {"backend": "openai", "fallbacks": ["b", "c"]},
                "b": {"backend": "openai", "fallbacks": ["d", "a"]},  # a cycle back to a
                "c": {"backend": "openai", "fallbacks": ["d"]},
                "d": {"backend": "openai"},
                "broken": {"backend": "openai", "fallbacks": ["e"]},
            }
        )
    )
    assert reg.chain("a") == ["a", "b", "c", "d"]
    assert reg.chain("b") == ["b", "d", "a", "c"]
    assert reg.chain("d") == ["d"]
    with pytest.raises(ModelNotFound) as ei:
        reg.chain("broken")
    assert "'e'" in ei.value.message
    assert reg._built == {}


def test_fallback_to_a_registered_model() -> None:
    reg = ModelRegistry(settings({"big": {"backend": "openai", "fallbacks": ["echo"]}}))
    with pytest.raises(ModelNotFound):
        reg.chain("big")
    reg.register("echo", Echo())
    assert reg.chain("big") == ["big", "echo"]


async def test_register_in_process_models() -> None:
    reg = ModelRegistry(settings({"big": {"backend": "openai"}}))
    echo = Echo()
    reg.register("echo", echo)
    assert reg.aliases() == ["big", "echo"]
    assert reg.get("echo") is echo
    assert reg.capabilities("echo") == {"streams": False, "tools": True, "json_schema": False}
    assert (await reg.get("echo").complete(REQ)).text == "ping"
    # the default stream() of a ChatModel chunks the complete answer
    chunks = [c async for c in reg.get("echo").stream(REQ)]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "ping"
    # registering replaces a configured alias too
    other = Echo()
    reg.register("big", other)
    assert reg.get("big") is other
    await reg.aclose()
    assert echo.closed and other.closed
