"""zapgate's JID strings as neonize's JIDs for whatsmeow's LID map, and its answers back.

Pure functions: no Go calls, no I/O. The core only ever asks about user JIDs without a device
(`user@s.whatsapp.net`, `user@lid`), checked before they get here.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

from zapgate.sessions.neonize_events import user_jid

with warnings.catch_warnings():
    # Importing neonize runs `uname -a` through os.popen twice and never closes the pipes.
    warnings.simplefilter("ignore", ResourceWarning)
    from neonize.utils.jid import build_jid  # type: ignore[import-untyped]


def to_neonize(jid: str) -> Any:
    """`user@server` as neonize's JID (every field set, as Go's Marshal wants)."""
    user, _, server = jid.partition("@")
    return build_jid(user, server)


def in_order(asked: list[str], found: Mapping[str, Any]) -> list[str]:
    """The other identity of each asked JID ("" where the map has none), from the engine's
    `user@server` -> neonize JID answers."""
    return [user_jid(found[jid]) if jid in found else "" for jid in asked]
