"""Shared, expensive parts of the agent tests: a trained specialist, an MCP server script, an upstream."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from smallfleet.testing.upstream import ScriptedUpstream

MCP_SERVER = textwrap.dedent(
    '''
    import time

    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError

    app = MCPServer("warehouse")


    @app.tool()
    def shipping_eta(order_id: str) -> str:
        """Days until an order arrives."""
        time.sleep(0.6)  # slow on purpose: the test checks that calls overlap
        return f"order {order_id} arrives in 2 days"


    @app.tool()
    def broken(reason: str) -> str:
        """Always fails."""
        raise ToolError(f"warehouse offline: {reason}")


    if __name__ == "__main__":
        app.run()
    '''
)


@pytest.fixture(scope="session")
def specialist_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A support-desk intent classifier trained on a small generated set (the skill's model)."""
    from smallfleet.specialists.classifier import Classifier
    from smallfleet.testing.intents import support_desk_examples

    out = tmp_path_factory.mktemp("specialists") / "triage"
    train = support_desk_examples(48, split="train", seed=1)
    Classifier(progress=False, epochs=4, seed=0).fit(train).save(out)
    return out


@pytest.fixture(scope="session")
def mcp_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mcp") / "warehouse_server.py"
    path.write_text(MCP_SERVER)
    return path


@pytest.fixture(scope="session")
def _upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream() as up:
        yield up


@pytest.fixture
def upstream(_upstream: ScriptedUpstream) -> ScriptedUpstream:
    _upstream.reset()
    return _upstream
