"""Python tools of the example support agent (examples/agents/support.yaml)."""

from __future__ import annotations

from typing import Literal


def lookup_order(order_id: str) -> dict[str, str]:
    """Look an order up in the shop's database.

    Args:
        order_id: The order number, e.g. "#12345".
    """
    digits = "".join(c for c in order_id if c.isdigit())
    if not digits:
        raise ValueError(f"{order_id!r} is not an order number")
    status = ["processing", "shipped", "delivered"][int(digits) % 3]
    return {"order_id": f"#{digits}", "status": status}


def refund_window(category: Literal["electronics", "accessories", "software"] = "electronics") -> str:
    """How many days a customer has to ask for a refund.

    Args:
        category: The product category.
    """
    return {"electronics": "30 days", "accessories": "60 days", "software": "14 days"}[category]
