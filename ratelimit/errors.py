"""Errors of the scheduler. All are ValueErrors: they mean a caller passed something wrong."""

from __future__ import annotations


class StateError(ValueError):
    """An exported scheduler state that cannot be imported (malformed or of another format)."""
