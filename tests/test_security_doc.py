"""docs/security.md's RPC table says what the code enforces (gateway/rpc/access.py)."""

from __future__ import annotations

import re
from pathlib import Path

from zapgate.gateway.rpc.access import REQUIRED_ROLES, TENANT_WIDE

DOC = Path(__file__).resolve().parent.parent / "docs" / "security.md"
ROW = re.compile(r"^\| `(\w+)\.(\w+)` \| (\w+) \| ([^|]+) \|$", re.MULTILINE)


def test_the_rpc_table_matches_the_access_table() -> None:
    rows = ROW.findall(DOC.read_text())
    documented = {(service, name): role for service, name, role, _ in rows}
    enforced = {
        (service, name): role.label
        for service, names in REQUIRED_ROLES.items()
        for name, role in names.items()
    }
    assert documented == enforced
    assert len(rows) == len(documented)  # each RPC once
    refused = {f"{s}/{n}" for s, n, _, scoped in rows if scoped.startswith("refused")}
    assert refused == TENANT_WIDE
