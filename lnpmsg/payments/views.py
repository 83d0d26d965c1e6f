"""The JSON shapes of the payments app's listings (sans-IO: store rows in, dicts out)."""

from __future__ import annotations

from typing import Any

__all__ = ["forward_view", "invoice_view", "payment_view"]


def invoice_view(row: dict[str, Any], now: float) -> dict[str, Any]:
    """An invoice for ``listinvoices``: an unpaid one past its expiry shows as ``expired``."""
    status = "expired" if row["status"] == "unpaid" and now > row["expires_at"] else row["status"]
    out = {
        "label": row["label"], "bolt11": row["bolt11"], "payment_hash": row["payment_hash"].hex(), "amount_msat": row["amount_msat"],
        "status": status, "description": row["description"], "expires_at": row["expires_at"],
        "received_msat": row["received_msat"], "paid_at": row["paid_at"],
    }  # fmt: skip
    if row["status"] == "paid":
        out["preimage"] = row["preimage"].hex()
    return out


def payment_view(row: dict[str, Any]) -> dict[str, Any]:
    """A payment for ``listpayments``."""
    return {
        "id": row["id"], "payment_hash": row["payment_hash"].hex(), "bolt11": row["bolt11"], "destination": row["payee"].hex(),
        "amount_msat": row["amount_msat"], "fee_msat": row["fee_msat"], "status": row["status"], "routes": row["routes"],
        "preimage": row["preimage"].hex() if row["preimage"] else None, "error": row["error"], "attempts": row["attempts"],
        "created_at": row["created_at"], "completed_at": row["completed_at"],
    }  # fmt: skip


def forward_view(row: dict[str, Any]) -> dict[str, Any]:
    """A forward for ``listforwards`` (the onion's shared secret stays private)."""
    return {k: (v.hex() if isinstance(v, bytes) else v) for k, v in row.items() if k != "shared_secret"}
