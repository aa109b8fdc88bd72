"""An address the gateway is told to listen on and cannot: the operator's to fix, so
`zapgate serve` says it in one line and exits (no traceback)."""

from __future__ import annotations


class CannotListen(OSError):
    pass
