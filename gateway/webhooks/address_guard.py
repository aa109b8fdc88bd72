"""Where a webhook may be delivered: by default only to public addresses, checked on the
address the host resolves to at delivery time (a name that resolved to a public address
when the webhook was created may point at 127.0.0.1 now). The caller then connects to the
checked address itself, so a second lookup cannot swap it (DNS rebinding)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class AddressRefused(Exception):
    """The host resolves to an address webhooks may not reach, or does not resolve."""


def is_public(address: Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


async def resolve(host: str, port: int, allow_private: bool) -> str:
    """The address to connect to for `host`: every address it resolves to must be allowed
    (private, loopback, link-local and other non-public ones only with `allow_private`)."""
    try:
        literal: Address | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        found = [literal]
    else:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as error:
            raise AddressRefused(f"cannot resolve {host}: {error}") from None
        found = [ipaddress.ip_address(info[4][0]) for info in infos]
        if not found:
            raise AddressRefused(f"{host} resolves to no address")
    if not allow_private:
        for address in found:
            if not is_public(address):
                raise AddressRefused(
                    f"{host} resolves to {address}, which is not a public address "
                    "(the gateway runs with webhooks to private addresses refused)"
                )
    return str(found[0])
