"""Specialist kinds from other distributions: the ``smallfleet.specialist_kinds`` entry points.

An installed distribution is too heavy for a unit test; the entry points are constructed here,
pointing at classes in this module, exactly as ``importlib.metadata`` would hand them over.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import ClassVar

import pytest

from smallfleet.errors import PluginError, SmallfleetError, UserError
from smallfleet.specialists import base
from smallfleet.specialists.base import (
    ENTRY_POINT_GROUP,
    Prediction,
    Specialist,
    SpecialistMeta,
    known_kinds,
    load_kind,
    load_specialist,
    specialist_class,
)
from smallfleet.types import ChatRequest, ChatResponse


class KeywordSpecialist(Specialist):
    """A plugin kind: answers ``refund`` when the text says money."""

    kind: ClassVar[str] = "keyword"

    def __init__(self) -> None:
        self.meta = SpecialistMeta(kind=self.kind, base_model="rules")

    def predict(self, requests: Sequence[ChatRequest]) -> list[Prediction]:
        return [
            Prediction(
                ChatResponse.of_text("kw", "refund" if "money" in r.last_user_text() else "other"), 0.9
            )
            for r in requests
        ]

    def save(self, directory: str | Path) -> Path:
        self.meta.write(Path(directory))
        return Path(directory)

    @classmethod
    def load(cls, directory: str | Path) -> KeywordSpecialist:
        return cls()


class NotASpecialist:
    pass


def _ep(name: str, target: str) -> EntryPoint:
    return EntryPoint(name=name, value=f"{__name__}:{target}", group=ENTRY_POINT_GROUP)


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[EntryPoint]]:
    """The entry points "installed" in the group: what the test appends to the list."""
    eps: list[EntryPoint] = []

    def fake_entry_points(*, group: str) -> list[EntryPoint]:
        return [ep for ep in eps if ep.group == group]

    monkeypatch.setattr(base, "entry_points", fake_entry_points)
    base.plugin_kinds.cache_clear()
    yield eps
    base.plugin_kinds.cache_clear()


def test_a_plugin_kind_is_found_loaded_and_served_from_its_folder(installed, tmp_path) -> None:
    installed.append(_ep("keyword", "KeywordSpecialist"))
    assert known_kinds()[:4] == ["classifier", "extractor", "tool_caller", "generator"]
    assert known_kinds()[4:] == ["keyword"]
    assert specialist_class("keyword") is KeywordSpecialist
    KeywordSpecialist().save(tmp_path / "kw")
    loaded = load_specialist(tmp_path / "kw")  # the kind named in specialist.json
    assert isinstance(loaded, KeywordSpecialist)
    (pred,) = loaded.predict(
        [ChatRequest(model="m", messages=[{"role": "user", "content": "I want my money back"}])]
    )
    assert pred.response.message.content == "refund"


def test_built_in_kinds_come_first_and_plugins_are_not_read_for_them(installed) -> None:
    installed.append(_ep("classifier", "NotASpecialist"))  # would fail if it were loaded
    assert specialist_class("classifier").__name__ == "Classifier"
    assert known_kinds().count("classifier") == 1


def test_a_plugin_that_does_not_import_is_a_clear_error(installed) -> None:
    installed.append(EntryPoint(name="broken", value="no_such_module_xyz:Thing", group=ENTRY_POINT_GROUP))
    with pytest.raises(
        PluginError, match=r"broken = 'no_such_module_xyz:Thing' failed to load: ModuleNotFound"
    ):
        specialist_class("broken")


def test_a_plugin_that_names_something_else_is_a_clear_error() -> None:
    with pytest.raises(PluginError, match=r"not a subclass of smallfleet\.specialists\.Specialist"):
        load_kind(_ep("odd", "NotASpecialist"))
    assert issubclass(PluginError, SmallfleetError)  # the CLI prints it as one line


def test_an_unknown_kind_names_the_known_ones(installed) -> None:
    installed.append(_ep("keyword", "KeywordSpecialist"))
    with pytest.raises(UserError, match=r"Unknown specialist kind 'keywrd'\. Did you mean 'keyword'\?"):
        specialist_class("keywrd")


def test_specialist_and_chat_model_are_abstract() -> None:
    from smallfleet.models.base import ChatModel

    class NoPredict(Specialist):
        pass

    class NoComplete(ChatModel):
        pass

    with pytest.raises(TypeError, match="predict"):
        NoPredict()  # type: ignore[abstract]
    with pytest.raises(TypeError, match="complete"):
        NoComplete()  # type: ignore[abstract]
    with pytest.raises(NotImplementedError, match="KeywordSpecialist cannot be trained"):
        KeywordSpecialist().fit([])
