"""Models addressed by alias, built on first use.

The registry reads the ``models`` section of the settings; nothing is connected
or loaded until :meth:`ModelRegistry.get` is first called for an alias. In-process
models (a trained specialist, a test double) can be added with :meth:`register`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from smallfleet.errors import ModelNotFound

if TYPE_CHECKING:
    from smallfleet.config import ModelConfig, Settings
    from smallfleet.models.base import ChatModel

__all__ = ["BACKENDS", "ModelRegistry"]

#: backend name → "module:Class"; each class has ``from_config(alias, config, settings)``.
BACKENDS: dict[str, str] = {
    "openai": "smallfleet.models.openai_http:OpenAICompatible",
    "anthropic": "smallfleet.models.anthropic_http:AnthropicMessages",
    "local": "smallfleet.models.local_hf:LocalCausalLM",
    "specialist": "smallfleet.specialists.base:SpecialistChatModel",
}


def backend_class(backend: str) -> type[ChatModel]:
    module, _, name = BACKENDS[backend].partition(":")
    return getattr(importlib.import_module(module), name)


class ModelRegistry:
    """Lazy, string-addressed models."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._configs: dict[str, ModelConfig] = dict(settings.models)
        self._built: dict[str, ChatModel] = {}

    def aliases(self) -> list[str]:
        return sorted(set(self._configs) | set(self._built))

    def __contains__(self, alias: object) -> bool:
        return alias in self._configs or alias in self._built

    def config(self, alias: str) -> ModelConfig | None:
        return self._configs.get(alias)

    def register(self, alias: str, model: ChatModel) -> None:
        """Add an in-process model under ``alias`` (replacing one of that name)."""
        self._built[alias] = model

    def get(self, alias: str) -> ChatModel:
        """The model under ``alias``, built on first use."""
        model = self._built.get(alias)
        if model is not None:
            return model
        cfg = self._configs.get(alias)
        if cfg is None:
            raise ModelNotFound(alias, self.aliases())
        model = backend_class(cfg.backend).from_config(alias, cfg, self.settings)  # type: ignore[attr-defined]
        self._built[alias] = model
        return model

    def chain(self, alias: str) -> list[str]:
        """``alias`` followed by its fallbacks (and theirs), each once."""
        if alias not in self:
            raise ModelNotFound(alias, self.aliases())
        out: list[str] = []
        todo = [alias]
        while todo:
            a = todo.pop(0)
            if a in out:
                continue
            out.append(a)
            cfg = self._configs.get(a)
            if cfg is not None:
                for f in cfg.fallbacks:
                    if f not in self:
                        raise ModelNotFound(f, self.aliases())
                    todo.append(f)
        return out

    def capabilities(self, alias: str) -> dict[str, bool]:
        """What the model under ``alias`` can do, read from its class without building it."""
        built = self._built.get(alias)
        if built is not None:
            return built.capabilities()
        cfg = self._configs.get(alias)
        if cfg is None:
            raise ModelNotFound(alias, self.aliases())
        cls = backend_class(cfg.backend)
        return {
            "streams": cls.supports_streaming,
            "tools": cls.supports_tools,
            "json_schema": cls.supports_json_schema,
        }

    async def aclose(self) -> None:
        for model in self._built.values():
            await model.aclose()
        self._built.clear()
