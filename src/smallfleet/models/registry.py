"""Models addressed by alias, built on first use.

The registry reads the ``models`` section of the settings; nothing is connected
or loaded until :meth:`ModelRegistry.get` is first called for an alias. In-process
models (a trained specialist, a test double) can be added with :meth:`register`.
"""

from __future__ import annotations

import difflib
import functools
import importlib
from typing import TYPE_CHECKING

from smallfleet.errors import ModelNotFound, PluginError, UserError

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

    from smallfleet.config import ModelConfig, Settings
    from smallfleet.models.base import ChatModel

__all__ = [
    "BACKENDS",
    "ENTRY_POINT_GROUP",
    "ModelRegistry",
    "backend_class",
    "known_backends",
    "load_backend",
    "plugin_backends",
]

#: The built-in backends, name → "module:Class"; each class has ``from_config(alias, config,
#: settings)``. They come first: a plugin cannot replace one.
BACKENDS: dict[str, str] = {
    "openai": "smallfleet.models.openai_http:OpenAICompatible",
    "anthropic": "smallfleet.models.anthropic_http:AnthropicMessages",
    "local": "smallfleet.models.local_hf:LocalCausalLM",
    "specialist": "smallfleet.specialists.base:SpecialistChatModel",
}

#: The entry point group through which another distribution adds a backend, in its
#: ``pyproject.toml``::
#:
#:     [project.entry-points."smallfleet.backends"]
#:     bedrock = "my_package.bedrock:BedrockModel"
#:
#: The name is the backend (what ``models.<alias>.backend`` says); the object a
#: :class:`~smallfleet.models.base.ChatModel` subclass with ``from_config``. Read on the first
#: lookup of a backend that is not built in.
ENTRY_POINT_GROUP = "smallfleet.backends"


@functools.lru_cache(maxsize=1)
def plugin_backends() -> dict[str, EntryPoint]:
    """The backends installed distributions add (group :data:`ENTRY_POINT_GROUP`), by name; a
    name that is a built-in backend is left out (built-ins come first). Not loaded yet."""
    from importlib.metadata import entry_points

    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in BACKENDS:
            found.setdefault(ep.name, ep)
    return found


def known_backends() -> list[str]:
    """Every backend :func:`backend_class` knows: the built-ins, then the plugins'."""
    return [*BACKENDS, *(b for b in plugin_backends() if b not in BACKENDS)]


def load_backend(ep: EntryPoint) -> type[ChatModel]:
    """The :class:`ChatModel` subclass a plugin's entry point names, or a :class:`PluginError`
    that names the entry point, its distribution and what went wrong."""
    from smallfleet.models.base import ChatModel

    where = f"{ep.name} = {ep.value!r}"
    dist = getattr(ep, "dist", None)
    if dist is not None:
        where += f" (from the {dist.name} distribution: upgrade or uninstall it)"
    try:
        obj = ep.load()
    except Exception as e:
        raise PluginError(f"The backend plugin {where} failed to load: {type(e).__name__}: {e}") from e
    if not (isinstance(obj, type) and issubclass(obj, ChatModel)):
        raise PluginError(
            f"The backend plugin {where} names {obj!r}, not a subclass of smallfleet.models.base.ChatModel."
        )
    if not callable(getattr(obj, "from_config", None)):
        raise PluginError(
            f"The backend plugin {where} names {obj.__name__}, which has no from_config(alias, config, "
            "settings) to build it from the configuration."
        )
    return obj


def backend_class(backend: str) -> type[ChatModel]:
    """The class of ``backend``: a built-in, else one an installed plugin adds (loaded now)."""
    if backend in BACKENDS:
        module, _, name = BACKENDS[backend].partition(":")
        return getattr(importlib.import_module(module), name)
    ep = plugin_backends().get(backend)
    if ep is None:
        known = known_backends()
        close = difflib.get_close_matches(backend, known, n=1, cutoff=0.6)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UserError(f"Unknown backend {backend!r}.{hint} Known backends: {', '.join(known)}.")
    return load_backend(ep)


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
