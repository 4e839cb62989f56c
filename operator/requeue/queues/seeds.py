"""The ``host:port,host:port`` list of a ``redis+cluster://`` or ``redis+sentinel://`` URL.

One parser for both, so a cluster's seed nodes and a Sentinel URL's Sentinels accept the same
forms (``[v6]:port`` included) and refuse the same hostile ones in linear time: at most
``most + 1`` items are split off, and a port longer than five digits never reaches ``int``
(whose limit on digits would raise a ``ValueError`` no caller expects). What a bad list means
is each caller's to say, so the messages stay theirs.
"""

from __future__ import annotations

from requeue.errors import RedisUrlInvalid

__all__ = ["host_address", "host_port", "parse_hosts"]


def parse_hosts(
    hostport: str, *, most: int, default_port: int | None, invalid: str, too_many: str
) -> tuple[tuple[str, int], ...]:
    """``hostport`` (comma-separated ``host[:port]``) -> ((host, port), ...).

    :param default_port: the port of an item that names none; None: every item names one.
    :raises RedisUrlInvalid: ``too_many`` with more than ``most`` items (checked first, before
        any is read), else ``invalid`` for the first item without a host or a port 1..65535.
    """
    items = hostport.split(",", most)
    if len(items) > most:
        raise RedisUrlInvalid(too_many)
    hosts: list[tuple[str, int]] = []
    for item in items:
        host, port = host_port(item, default_port)
        if not host or port is None:
            raise RedisUrlInvalid(invalid)
        hosts.append((host, port))
    return tuple(hosts)


def host_port(item: str, default_port: int | None = None) -> tuple[str, int | None]:
    """``host[:port]`` or ``[v6][:port]`` -> (host, port): ``default_port`` when the port is left
    out (``host``, ``host:``, ``[v6]``), None when it is not a number 1..65535."""
    if item.startswith("["):
        host, _, rest = item[1:].partition("]")
        if rest and not rest.startswith(":"):
            return host, None
        port = rest[1:]
    else:
        host, _, port = item.rpartition(":") if ":" in item else (item, "", "")
    if not port:
        return host, default_port
    if not (port.isascii() and port.isdigit() and len(port) <= 5 and 0 < int(port) < 65536):
        return host, None
    return host, int(port)


def host_address(host: str, port: int) -> str:
    """``host:port``, with an IPv6 host in brackets (``[::1]:6379``): for URLs and messages."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
