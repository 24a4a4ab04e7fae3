"""Which network addresses a scrape may connect to.

Every host is resolved before each request (and each redirect hop), and every address it resolves to must
be public: private, loopback, link-local, shared (CGNAT), multicast, reserved, unspecified and documentation
ranges are refused unless an allow-list (IMAGINEER_TRAINER_SCRAPE_ALLOWED_NETWORKS) covers them. The fetcher
then connects to the address that was checked, so a second DNS answer (rebinding) cannot slip in.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]


class BlockedAddress(Exception):
    """The host resolves to an address a scrape must not reach (or does not resolve at all)."""


def parse_networks(items: Iterable[str]) -> tuple[IPNetwork, ...]:
    """CIDRs ("127.0.0.0/8", "fd00::/8") or single addresses; raises ValueError naming a bad one."""
    networks = []
    for item in items:
        try:
            networks.append(ipaddress.ip_network(item.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP network (CIDR) or address") from None
    return tuple(networks)


def is_public(address: IPAddress) -> bool:
    """Whether an address is on the public internet (IPv4-mapped IPv6 addresses are judged as IPv4)."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return is_public(address.ipv4_mapped)
        if address.sixtofour is not None or address.teredo is not None:
            return False  # tunnels that embed another address: refuse rather than unwrap
    special = (address.is_private or address.is_loopback or address.is_link_local or address.is_multicast
               or address.is_reserved or address.is_unspecified
               or (isinstance(address, ipaddress.IPv6Address) and address.is_site_local))
    return address.is_global and not special


def system_resolver(host: str, port: int) -> list[str]:
    try:
        answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise BlockedAddress(f"{host} does not resolve: {error}") from None
    return list(dict.fromkeys(str(answer[4][0]) for answer in answers))


@dataclass(frozen=True)
class AddressGuard:
    allowed_networks: tuple[IPNetwork, ...] = ()
    resolve: Resolver = system_resolver

    def permits(self, address: IPAddress) -> bool:
        if any(address in network for network in self.allowed_networks if network.version == address.version):
            return True
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            mapped = address.ipv4_mapped
            if any(mapped in network for network in self.allowed_networks if network.version == 4):
                return True
        return is_public(address)

    def check(self, host: str, port: int) -> str:
        """Resolves ``host`` and returns the address to connect to; raises BlockedAddress if any address it
        resolves to is refused (one bad answer is enough: the next lookup might return it)."""
        host = host.strip("[]")
        try:
            literal = ipaddress.ip_address(host)
            addresses = [str(literal)]
        except ValueError:
            addresses = self.resolve(host, port)
        if not addresses:
            raise BlockedAddress(f"{host} does not resolve")
        for text in addresses:
            address = ipaddress.ip_address(text.split("%", 1)[0])
            if not self.permits(address):
                raise BlockedAddress(f"{host} resolves to {address}, a non-public address that "
                                     "IMAGINEER_TRAINER_SCRAPE_ALLOWED_NETWORKS does not allow")
        return addresses[0].split("%", 1)[0]
