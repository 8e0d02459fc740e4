"""A tiny MCP server (stdio) for the example support agent: the warehouse's shipping estimates."""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer

app = MCPServer("warehouse")


@app.tool()
def shipping_eta(order_id: str) -> str:
    """Days until an order arrives."""
    digits = "".join(c for c in order_id if c.isdigit()) or "0"
    return f"order #{digits} arrives in {int(digits) % 5 + 1} days"


if __name__ == "__main__":
    app.run()
