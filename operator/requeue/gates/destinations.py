"""Where gates may connect: the operator's allow/deny policy for gate destinations.

Anyone allowed to create a DLQReplay chooses its gates' URLs, methods and headers, and the
operator sends those requests from inside the cluster. Without a policy a gate on a cloud
metadata endpoint (``Metadata-Flavor: Google``) reads a node's access token into the gate's
status. So the operator checks every destination before it connects:

* ``REQUEUE_GATE_DENY`` (Helm ``gates.deniedDestinations``): comma-separated CIDRs and host
  names never connected to, on top of :data:`DEFAULT_DENY` (link-local and cloud metadata);
* ``REQUEUE_GATE_ALLOW`` (Helm ``gates.allowedDestinations``): when set, only these CIDRs
  and host names may be connected to. A deny entry wins over an allow entry.

A host name entry matches the name itself; one starting with ``.`` matches every name under
it (``.svc.cluster.local``). A name is resolved and *every* address checked, and HTTP gates
connect only to an address that passed (:class:`GuardedBackend`, on every redirect hop too),
so a name that resolves differently the second time (DNS rebinding) gets no further.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpcore

from requeue.api.conditions import Reason
from requeue.redact import split_url

__all__ = [
    "ALLOW_ENV",
    "DEFAULT_DENY",
    "DENY_ENV",
    "DestinationDenied",
    "DestinationPolicy",
    "GuardedBackend",
    "check_url",
    "current_policy",
    "host_port",
    "pin_postgres",
    "set_policy",
]

ALLOW_ENV = "REQUEUE_GATE_ALLOW"
DENY_ENV = "REQUEUE_GATE_DENY"

#: Always refused: link-local ranges (where cloud metadata lives) and the metadata
#: services' addresses and names on AWS, GCP, Azure, Alibaba and OpenStack.
DEFAULT_DENY: tuple[str, ...] = (
    "169.254.0.0/16",
    "fe80::/10",
    "169.254.169.254/32",
    "fd00:ec2::254/128",
    "100.100.100.200/32",
    "metadata.google.internal",
    "metadata",
    "instance-data",
    "instance-data.ec2.internal",
)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class DestinationDenied(Exception):
    """The gate's destination is refused by the operator's policy; nothing was sent to it."""

    reason = Reason.DESTINATION_DENIED

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class _Rules:
    """One list: networks and host names (exact, or ``.suffix``), with where it came from."""

    source: str
    networks: tuple[Network, ...] = ()
    names: tuple[str, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str], source: str) -> _Rules:
        networks: list[Network] = []
        names: list[str] = []
        for raw in entries:
            entry = raw.strip().lower()
            entry = entry if entry.startswith(".") else entry.rstrip(".")
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                names.append(entry)
        return cls(source, tuple(networks), tuple(names))

    @property
    def empty(self) -> bool:
        return not self.networks and not self.names

    def name_matches(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        return any(host == n or (n.startswith(".") and host.endswith(n)) for n in self.names)

    def address_matches(self, address: Address) -> bool:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address.version == n.version and address in n for n in self.networks)


@dataclass(frozen=True)
class DestinationPolicy:
    """The deny rules (defaults plus the operator's) and the optional allow rules."""

    deny: tuple[_Rules, ...]
    allow: _Rules = field(default_factory=lambda: _Rules(ALLOW_ENV))

    @classmethod
    def build(cls, *, allow: Sequence[str] = (), deny: Sequence[str] = ()) -> DestinationPolicy:
        return cls(
            deny=(
                _Rules.parse(DEFAULT_DENY, "the default deny list: link-local and cloud metadata"),
                _Rules.parse(deny, DENY_ENV),
            ),
            allow=_Rules.parse(allow, ALLOW_ENV),
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DestinationPolicy:
        env = os.environ if environ is None else environ
        return cls.build(allow=env.get(ALLOW_ENV, "").split(","), deny=env.get(DENY_ENV, "").split(","))

    def check_name(self, host: str) -> None:
        """Refuse a host name (or address literal) before anything is resolved or sent."""
        literal = _literal(host)
        for rules in self.deny:
            if rules.name_matches(host) or (literal is not None and rules.address_matches(literal)):
                raise DestinationDenied(_denied(host, rules.source))
        if (
            literal is not None
            and not self.allow.empty
            and not self.allow.address_matches(literal)
            and not self.allow.name_matches(host)
        ):
            raise DestinationDenied(_not_allowed(host))

    def check_addresses(self, host: str, addresses: Sequence[Address]) -> None:
        """Refuse ``host`` when any address it resolved to is denied, or (with an allow list)
        when the name is not allowed and some address is not either."""
        self.check_name(host)
        for address in addresses:
            for rules in self.deny:
                if rules.address_matches(address):
                    shown = str(address) if str(address) == host else f"{host} ({address})"
                    raise DestinationDenied(_denied(shown, rules.source))
        if self.allow.empty or self.allow.name_matches(host):
            return
        for address in addresses:
            if not self.allow.address_matches(address):
                raise DestinationDenied(_not_allowed(host if str(address) == host else f"{host} ({address})"))

    async def resolve(self, host: str, port: int) -> list[Address]:
        """Check the name, resolve it, check every address; the addresses that may be connected to."""
        self.check_name(host)
        literal = _literal(host)
        if literal is not None:
            addresses: list[Address] = [literal]
        else:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
            addresses = list(
                dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos)
            )
        self.check_addresses(host, addresses)
        return addresses


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%")[0])
    except ValueError:
        return None


def _denied(what: str, source: str) -> str:
    return f"DestinationDenied: {what} is denied by the operator's gate policy ({source})"


def _not_allowed(what: str) -> str:
    return f"DestinationDenied: {what} is not in the operator's allowed gate destinations ({ALLOW_ENV})"


_policy: DestinationPolicy | None = None


def current_policy() -> DestinationPolicy:
    """The process's policy: set by ``requeue run --gate-allow/--gate-deny``, else the environment."""
    return _policy if _policy is not None else DestinationPolicy.from_env()


def set_policy(policy: DestinationPolicy | None) -> None:
    """Make ``policy`` the process's (None: read the environment again)."""
    global _policy
    _policy = policy


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, connecting only to addresses the policy let through.

    Every connection (each redirect hop, each retry) resolves and checks the host itself
    and then connects to the checked address, so what was checked is what is reached.
    """

    def __init__(self, policy: DestinationPolicy) -> None:
        self.policy = policy
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await self.policy.resolve(host, port)
        except OSError as exc:  # not resolvable: what httpx reports for any failed connect
            raise httpcore.ConnectError(str(exc)) from exc
        last: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    str(address),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise DestinationDenied(f"DestinationDenied: unix socket {path} is not a gate destination")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def host_port(hostport: str, default_port: int) -> tuple[str, int]:
    """``host[:port]`` or ``[v6]:port`` split; the default port when none is given."""
    if hostport.startswith("["):
        host, _, rest = hostport[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = hostport.rpartition(":") if hostport.count(":") == 1 else (hostport, "", "")
    return host, int(port) if port.isascii() and port.isdigit() and len(port) <= 5 else default_port


#: Hosts of one URL checked at most (a list of Sentinels or cluster seeds); the rest are refused.
MAX_URL_HOSTS = 64


async def check_url(policy: DestinationPolicy, url: str, default_port: int) -> list[Address]:
    """Check every host of a ``scheme://`` URL (a Redis gate's); a unix socket has no host to check.

    ``redis+sentinel://`` and ``redis+cluster://`` name a comma-separated list (Sentinels on
    26379 unless a port is given): each is checked, as the client may connect to any of them.
    A host that does not resolve does not stop the others from being checked; its
    ``OSError`` is raised after them.
    """
    parts = split_url(url)
    if parts is None or parts.scheme.startswith("unix") or not parts.hostport:
        return []
    if parts.scheme.lower().endswith("+sentinel"):
        default_port = 26379
    hosts = parts.hostport.split(",", MAX_URL_HOSTS)
    if len(hosts) > MAX_URL_HOSTS:
        raise DestinationDenied(f"DestinationDenied: more than {MAX_URL_HOSTS} hosts in one URL")
    found: list[Address] = []
    unresolved: OSError | None = None
    for hostport in hosts:
        host, port = host_port(hostport, default_port)
        try:
            found += await policy.resolve(host, port)
        except OSError as exc:
            unresolved = unresolved or exc
    if unresolved is not None:
        raise unresolved
    return found


async def pin_postgres(policy: DestinationPolicy, params: MutableMapping[str, Any]) -> None:
    """Check a libpq connection's hosts; with one TCP host and no ``hostaddr``, connect to the
    checked address (``hostaddr``; ``host`` still names the server for TLS)."""
    port = int(str(params.get("port") or "5432").split(",")[0] or 5432)
    hosts = [h for h in str(params.get("host") or "").split(",") if h and not h.startswith("/")]
    given = [a for a in str(params.get("hostaddr") or "").split(",") if a]
    for address in given:
        await policy.resolve(address, port)
    checked = [await policy.resolve(h, port) for h in hosts]
    if len(hosts) == 1 and not given and "," not in str(params.get("host")):
        params["hostaddr"] = str(checked[0][0])
