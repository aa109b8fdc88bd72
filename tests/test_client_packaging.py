"""The Python client ships its own copy of the generated code (`zapgate_client.v1`): it must
need nothing from the server, and load next to the server's `zapgate.v1` in one process."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest


def run(code: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("first", ["zapgate.v1", "zapgate_client.v1"])
def test_both_copies_load_in_one_process_and_share_message_classes(first: str) -> None:
    other = "zapgate_client.v1" if first == "zapgate.v1" else "zapgate.v1"
    run(f"""
        import importlib, pkgutil
        for name in ({first!r}, {other!r}):
            package = importlib.import_module(name)
            for module in pkgutil.iter_modules(package.__path__):
                importlib.import_module(f"{{name}}.{{module.name}}")
        from zapgate.v1 import event_pb2 as server
        from zapgate_client.v1 import event_pb2 as client
        assert client.DESCRIPTOR is server.DESCRIPTOR
        assert client.Event is server.Event
        event = client.Event(cursor=7, instance_id="sales")
        assert server.Event.FromString(event.SerializeToString()) == event
        assert server.SubscribeResponse(event=event).event.cursor == 7
    """)


def test_the_client_imports_nothing_of_the_server() -> None:
    run("""
        import importlib, pkgutil, sys
        from importlib.abc import MetaPathFinder

        class Forbid(MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("zapgate", "neonize", "sqlalchemy", "cryptography"):
                    raise ImportError(f"the client imported {name}")
                return None

        sys.meta_path.insert(0, Forbid())
        import zapgate_client, zapgate_client.v1
        for module in pkgutil.iter_modules(zapgate_client.v1.__path__):
            importlib.import_module(f"zapgate_client.v1.{module.name}")

        async def main():
            async with zapgate_client.Client("127.0.0.1:1", "zg_key"):
                pass

        import asyncio
        asyncio.run(main())
    """)
