"""A gRPC channel to several cluster nodes that sends each call to one of them, picked at
random: the public API tests run through it to prove a call behaves the same on any node."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import grpc.aio


class _AnyOf:
    """One method on every node; each invocation goes to one of them."""

    def __init__(self, callables: Sequence[Callable[..., Any]], rng: random.Random) -> None:
        self._callables = callables
        self._rng = rng

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._rng.choice(self._callables)(*args, **kwargs)


class RandomNodeChannel:
    def __init__(self, channels: Sequence[grpc.aio.Channel], seed: int = 19) -> None:
        self.channels = list(channels)
        self._rng = random.Random(seed)

    def _each(self, kind: str, *args: Any, **kwargs: Any) -> _AnyOf:
        return _AnyOf([getattr(c, kind)(*args, **kwargs) for c in self.channels], self._rng)

    def unary_unary(self, *args: Any, **kwargs: Any) -> _AnyOf:
        return self._each("unary_unary", *args, **kwargs)

    def unary_stream(self, *args: Any, **kwargs: Any) -> _AnyOf:
        return self._each("unary_stream", *args, **kwargs)

    def stream_unary(self, *args: Any, **kwargs: Any) -> _AnyOf:
        return self._each("stream_unary", *args, **kwargs)

    def stream_stream(self, *args: Any, **kwargs: Any) -> _AnyOf:
        return self._each("stream_stream", *args, **kwargs)

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()
