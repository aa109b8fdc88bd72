"""Who is calling: the tenant, role and instance scope of the call's API key.

Roles are ordered: each one may do everything the ones below it may. A key's scope is the
set of instances it reaches; an empty scope means every instance of its tenant."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Role(enum.IntEnum):
    VIEWER = 1  # reads
    SENDER = 2  # + sends and message actions
    OPERATOR = 3  # + instance lifecycle, send policy, groups, webhooks
    ADMIN = 4  # + API keys

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, label: str) -> Role:
        """The role named `label` (`viewer`, `sender`, `operator`, `admin`); ValueError
        otherwise."""
        try:
            return cls[label.strip().upper()]
        except KeyError:
            names = ", ".join(role.label for role in cls)
            raise ValueError(f"unknown role {label!r}; use one of {names}") from None


@dataclass(frozen=True)
class Caller:
    """An authenticated API key. `scope` is sorted; empty means the whole tenant."""

    tenant: str
    key_id: str
    role: Role
    scope: tuple[str, ...] = ()

    @property
    def scoped(self) -> bool:
        return bool(self.scope)

    def reaches(self, instance_id: str) -> bool:
        return not self.scope or instance_id in self.scope

    def covers(self, scope: tuple[str, ...] | list[str]) -> bool:
        """Whether a key with `scope` reaches nothing this one does not."""
        if not self.scope:
            return True
        return bool(scope) and set(scope) <= set(self.scope)
