"""Where a client's destination may point: the network policy every destination host passes,
when it is set and again when a loader connects (DNS can change in between).

A destination host is refused when any address it resolves to is
- one of the platform's own services: the control database (its host, port and database),
  Kafka, the S3 endpoint or the spool — never allowed, whatever the allow-list says, with one
  exception: an Iceberg destination's S3 endpoint may be the platform's own when its warehouse
  location's bucket is one an operator listed in ``SKEIN_DESTINATION_PLATFORM_S3_BUCKETS``
  (never the batch bucket, ``SKEIN_S3_BUCKET``: the settings refuse to name it, and so does
  this check); the listed buckets are reached as the platform's services reach its S3, so the
  allow-list is not asked;
- loopback, link-local (169.254.169.254, the cloud metadata service, included), private,
  shared, multicast, unspecified or reserved, unless ``SKEIN_DESTINATION_ALLOWED_NETWORKS``
  lists it.

An endpoint a loader reaches in plain text (an ``http://`` URL, Snowflake's ``protocol=http``)
must be in ``SKEIN_DESTINATION_ALLOWED_NETWORKS`` even on a public address: those drivers
resolve the name again themselves and cannot be pinned to the vetted address, and without TLS
nothing stops a changed DNS answer from sending the request elsewhere. Over TLS, the name is
checked against the server's certificate, which a host the name was pointed at cannot present.

``SKEIN_DESTINATION_ALLOWED_NETWORKS`` is a comma-separated list of ``NETWORK[:PORTS]`` where
NETWORK is an address, a CIDR block or a host name (resolved when the policy is built; IPv6 in
brackets) and PORTS one port or a range ``A-B`` (all ports when left out), e.g.
``127.0.0.1:5433`` (the local stack's demo warehouse) or ``10.0.0.0/8:5432-5439``.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger("skein.netpolicy")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]


class DestinationRefused(ValueError):
    """The destination points where clients may not reach; the message says where and why."""


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (A and AAAA)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise DestinationRefused(f"destination host {host!r} does not resolve: {exc}") from None
    return sorted({str(info[4][0]) for info in infos})


@dataclass(frozen=True)
class Allowed:
    network: IPNetwork
    first_port: int = 0
    last_port: int = 65535

    def covers(self, address: IPAddress, port: int) -> bool:
        return address in self.network and self.first_port <= port <= self.last_port


S3_ENDPOINT = "S3 endpoint"  # the ``what`` of the platform's S3 endpoint


@dataclass(frozen=True)
class Protected:
    """A platform service's address; ``database`` narrows a Postgres cluster to one database."""

    address: IPAddress
    port: int
    what: str
    database: str | None = None


def parse_allowed(text: str, resolver: Resolver = resolve) -> tuple[Allowed, ...]:
    found: list[Allowed] = []
    for raw in (part.strip() for part in text.split(",")):
        if not raw:
            continue
        host, ports = _split_host_ports(raw)
        first, last = 0, 65535
        if ports:
            low, _, high = ports.partition("-")
            try:
                first, last = int(low), int(high or low)
            except ValueError:
                raise ValueError(f"allowed network {raw!r}: ports must be N or N-M") from None
            if not 0 < first <= last <= 65535:
                raise ValueError(f"allowed network {raw!r}: ports out of range")
        try:
            networks = [ipaddress.ip_network(host, strict=False)]
        except ValueError:
            try:
                networks = [ipaddress.ip_network(a) for a in resolver(host, first or 1)]
            except DestinationRefused as exc:  # allows nothing until it resolves
                log.warning("an allowed network does not resolve", extra={"err": str(exc)})
                networks = []
        found.extend(Allowed(n, first, last) for n in networks)
    return tuple(found)


def _split_host_ports(raw: str) -> tuple[str, str]:
    if raw.startswith("["):  # [v6]:ports or [v6]/len:ports
        host, _, rest = raw[1:].partition("]")
        if rest.startswith("/"):
            length, _, ports = rest[1:].partition(":")
            return f"{host}/{length}", ports
        return host, rest.removeprefix(":")
    if raw.count(":") > 1:  # a bare IPv6 network, no ports
        return raw, ""
    host, _, ports = raw.partition(":")
    return host, ports


@dataclass(frozen=True)
class NetworkPolicy:
    allowed: tuple[Allowed, ...] = ()
    protected: tuple[Protected, ...] = ()
    resolver: Resolver = field(default=resolve, compare=False)
    # Buckets of the platform's S3 a destination's data files may go to, and the batch bucket,
    # which never may (SKEIN_DESTINATION_PLATFORM_S3_BUCKETS, SKEIN_S3_BUCKET).
    platform_s3_buckets: frozenset[str] = frozenset()
    batch_bucket: str = ""

    def check(
        self,
        host: str,
        port: int,
        *,
        database: str | None = None,
        cleartext: bool = False,
        bucket: str | None = None,
    ) -> list[str]:
        """The addresses ``host`` resolves to, when every one of them may be reached on
        ``port``; raises :class:`DestinationRefused` otherwise. ``cleartext``: the driver
        speaks plain text and resolves the name itself, so only listed networks may be
        reached. ``bucket``: an S3 endpoint, for that bucket only (the platform's S3 is
        reached for the buckets ``platform_s3_buckets`` names)."""
        if not host:
            raise DestinationRefused("the destination names no host")
        addresses = self.resolver(host, port)
        if not addresses:
            raise DestinationRefused(f"destination host {host!r} does not resolve")
        for text in addresses:
            address = ipaddress.ip_address(text.split("%", 1)[0])
            platform_bucket = False
            for p in self.protected:
                if (
                    _same(p.address, address)
                    and p.port == port
                    and (p.database is None or p.database == database)
                ):
                    if p.what == S3_ENDPOINT and bucket is not None:
                        self._check_platform_bucket(host, port, bucket)
                        platform_bucket = True
                        continue
                    raise DestinationRefused(
                        f"destination {host}:{port} is the platform's {p.what}; "
                        "a client destination can never point there"
                    )
            if platform_bucket or any(a.covers(address, port) for a in self.allowed):
                continue
            if cleartext:
                raise DestinationRefused(
                    f"a plain-text connection to {host}:{port} is allowed only to networks in "
                    "SKEIN_DESTINATION_ALLOWED_NETWORKS; use https"
                )
            kind = _non_public(address)
            if kind:
                raise DestinationRefused(
                    f"destination {host}:{port} resolves to {address}, a {kind} address; "
                    "list it in SKEIN_DESTINATION_ALLOWED_NETWORKS to allow it"
                )
        return addresses

    def _check_platform_bucket(self, host: str, port: int, bucket: str) -> None:
        if bucket and bucket == self.batch_bucket:
            raise DestinationRefused(
                f"s3://{bucket} on {host}:{port} is the platform's batch bucket "
                "(SKEIN_S3_BUCKET); a client destination can never write there"
            )
        if bucket not in self.platform_s3_buckets:
            listed = ", ".join(sorted(self.platform_s3_buckets)) or "none"
            raise DestinationRefused(
                f"destination {host}:{port} is the platform's {S3_ENDPOINT}, and bucket "
                f"{bucket!r} is not one of those SKEIN_DESTINATION_PLATFORM_S3_BUCKETS lets "
                f"destinations use ({listed})"
            )

    def check_url(self, url: str, *, bucket: str | None = None) -> None:
        """The same check for an endpoint URL (an API or S3 endpoint a client set; ``bucket``:
        the bucket an S3 endpoint is used for, see :meth:`check`)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise DestinationRefused(f"endpoint {url!r} is not an http(s) URL")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        self.check(parts.hostname, port, cleartext=parts.scheme == "http", bucket=bucket)


def _same(a: IPAddress, b: IPAddress) -> bool:
    if a == b:
        return True
    # A service listening on the unspecified address is reachable on every local one.
    return a.is_unspecified and b.is_loopback


def _non_public(address: IPAddress) -> str:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return _non_public(address.ipv4_mapped)
    for kind, flag in (
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("unspecified", address.is_unspecified),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
        ("shared (carrier-grade NAT)", address in ipaddress.ip_network("100.64.0.0/10")),
    ):
        if flag:
            return kind
    return ""


def platform_addresses(settings: Any, resolver: Resolver = resolve) -> tuple[Protected, ...]:
    """The platform's own services from the shared settings: the control database, every Kafka
    bootstrap server, the S3 endpoint and the spool."""
    import psycopg2.extensions

    found: list[Protected] = []

    def add(host: str | None, port: int, what: str, database: str | None = None) -> None:
        if not host or host.startswith("/"):
            return
        try:
            addresses = resolver(host, port)
        except DestinationRefused:
            return  # not resolvable here: nothing a destination could reach through it either
        found.extend(
            Protected(ipaddress.ip_address(a.split("%", 1)[0]), port, what, database)
            for a in addresses
        )

    dsn = psycopg2.extensions.parse_dsn(settings.control_dsn.get_secret_value())
    add(
        dsn.get("host", "127.0.0.1"),
        int(dsn.get("port", 5432)),
        "control database",
        dsn.get("dbname"),
    )
    for server in str(settings.kafka_bootstrap).split(","):
        host, _, port = server.strip().rpartition(":")
        if host and port.isdigit():
            add(host.strip("[]"), int(port), "Kafka broker")
    for url, what in ((settings.s3_endpoint, S3_ENDPOINT), (settings.spool_url, "spool")):
        parts = urlsplit(str(url))
        add(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80), what)
    return tuple(found)


def from_settings(settings: Any, resolver: Resolver = resolve) -> NetworkPolicy:
    return NetworkPolicy(
        parse_allowed(settings.destination_allowed_networks, resolver),
        platform_addresses(settings, resolver),
        resolver,
        settings.destination_platform_s3_buckets,
        settings.s3_bucket,
    )


def destination_endpoints(type_: str, config: dict[str, Any]) -> Iterable[tuple[str, Any]]:
    """What a destination of ``type_`` connects to: ("hostport", (host, port, database)),
    ("url", url) and ("s3", (url, bucket)) pairs, from its stored config."""
    if type_ in ("postgres", "redshift") or (type_ == "iceberg" and config.get("dsn_params")):
        # (an Iceberg destination's SQL catalog is a Postgres database)
        dsn = config.get("dsn_params") or {}
        default_port = 5439 if type_ == "redshift" else 5432
        yield (
            "hostport",
            (str(dsn.get("host") or ""), int(dsn.get("port") or default_port), dsn.get("dbname")),
        )
    if type_ == "redshift" and config.get("s3_endpoint"):
        yield "url", str(config["s3_endpoint"])
    if type_ == "snowflake" and (config.get("host") or config.get("protocol") == "http"):
        scheme = "http" if config.get("protocol") == "http" else "https"
        host = str(config.get("host") or f"{config.get('account')}.snowflakecomputing.com")
        port = f":{int(config['port'])}" if config.get("port") else ""
        yield "url", f"{scheme}://{host}{port}"
    if type_ == "bigquery" and config.get("api_endpoint"):
        yield "url", str(config["api_endpoint"])
    if type_ == "iceberg":
        if config.get("catalog_uri"):
            yield "url", str(config["catalog_uri"])
        if config.get("s3_endpoint"):
            # its data files: the platform's S3 is allowed for the buckets an operator listed
            bucket = urlsplit(str(config.get("warehouse") or "")).netloc
            yield "s3", (str(config["s3_endpoint"]), bucket)


def check_destination(
    policy: NetworkPolicy, type_: str, config: dict[str, Any]
) -> dict[str, list[str]]:
    """Every endpoint of a destination passes the policy, or :class:`DestinationRefused`.
    Returns each host endpoint's vetted addresses: a loader connects to one of those (libpq's
    ``hostaddr``), so a name that resolves elsewhere a moment later changes nothing."""
    vetted: dict[str, list[str]] = {}
    for kind, value in destination_endpoints(type_, config):
        if kind == "url":
            policy.check_url(value)
        elif kind == "s3":
            url, bucket = value
            policy.check_url(url, bucket=bucket)
        else:
            host, port, database = value
            vetted[host] = policy.check(host, port, database=database)
    return vetted
