"""Backends from the ``smallfleet.backends`` entry point group: built-ins first, loaded lazily,
a clear error naming the plugin. Entry points are constructed here, as an installed
distribution would declare them."""

from __future__ import annotations

from collections.abc import Iterator
from importlib.metadata import EntryPoint
from typing import Any

import pytest

from smallfleet.errors import PluginError, SmallfleetError, UserError
from smallfleet.models import registry
from smallfleet.models.base import ChatModel
from smallfleet.models.registry import ENTRY_POINT_GROUP, backend_class, known_backends, load_backend
from smallfleet.types import ChatRequest, ChatResponse


class EchoBackend(ChatModel):
    """A plugin's backend: answers with the last user message."""

    def __init__(self, name: str) -> None:
        self.name = name

    @classmethod
    def from_config(cls, alias: str, config: Any, settings: Any) -> EchoBackend:
        return cls(alias)

    async def complete(self, request: ChatRequest) -> ChatResponse:
        return ChatResponse.of_text(self.name, request.last_user_text())


class NotAModel:
    pass


def _ep(name: str, target: str) -> EntryPoint:
    return EntryPoint(name=name, value=f"{__name__}:{target}", group=ENTRY_POINT_GROUP)


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[EntryPoint]]:
    """The entry points "installed" in the group: what the test appends to the list."""
    eps: list[EntryPoint] = []

    def fake_entry_points(*, group: str) -> list[EntryPoint]:
        return [ep for ep in eps if ep.group == group]

    monkeypatch.setattr("importlib.metadata.entry_points", fake_entry_points)
    registry.plugin_backends.cache_clear()
    yield eps
    registry.plugin_backends.cache_clear()


async def test_a_plugin_backend_is_found_after_the_built_ins_and_loaded(installed: list[EntryPoint]) -> None:
    installed.append(_ep("echo", "EchoBackend"))
    installed.append(EntryPoint(name="other", value="smallfleet.models.base:ChatModel", group="not.ours"))
    assert known_backends() == ["openai", "anthropic", "local", "specialist", "echo"]
    cls = backend_class("echo")
    assert cls is EchoBackend
    model = cls.from_config("mine", None, None)  # type: ignore[attr-defined]
    request = ChatRequest.parse({"model": "mine", "messages": [{"role": "user", "content": "ping"}]})
    assert (await model.complete(request)).choices[0].message.content == "ping"


def test_built_in_backends_come_first_and_plugins_are_not_read_for_them(installed: list[EntryPoint]) -> None:
    installed.append(_ep("openai", "NotAModel"))  # would fail if it were loaded
    assert backend_class("openai").__name__ == "OpenAICompatible"
    assert known_backends().count("openai") == 1


def test_nothing_is_read_until_a_backend_that_is_not_built_in_is_asked_for(
    installed: list[EntryPoint],
) -> None:
    backend_class("openai")
    assert registry.plugin_backends.cache_info().currsize == 0


def test_an_unknown_backend_says_what_is_known(installed: list[EntryPoint]) -> None:
    installed.append(_ep("echo", "EchoBackend"))
    with pytest.raises(
        UserError, match=r"Unknown backend 'opena'\. Did you mean 'openai'\?.*specialist, echo\."
    ):
        backend_class("opena")


def test_a_plugin_that_does_not_import_is_a_clear_error(installed: list[EntryPoint]) -> None:
    installed.append(EntryPoint(name="broken", value="no_such_module_xyz:Thing", group=ENTRY_POINT_GROUP))
    with pytest.raises(
        PluginError, match=r"backend plugin broken = 'no_such_module_xyz:Thing' failed to load"
    ):
        backend_class("broken")


def test_a_plugin_that_names_something_else_is_a_clear_error() -> None:
    with pytest.raises(
        PluginError, match=r"odd = .*NotAModel.*not a subclass of smallfleet\.models\.base\.ChatModel"
    ):
        load_backend(_ep("odd", "NotAModel"))
    assert issubclass(PluginError, SmallfleetError)  # the CLI prints it as one line
