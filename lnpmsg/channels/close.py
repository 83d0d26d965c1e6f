"""channel_reestablish (filled in below)."""
from __future__ import annotations

from typing import Any


def dispatch(core: Any, item: Any, out: Any) -> bool:
    return False

CLOSE_STATE_CLASSES: list[type] = []
