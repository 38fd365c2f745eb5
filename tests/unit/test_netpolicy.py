"""The destination network policy: where a client's destination may point."""

from __future__ import annotations

import pytest

from common import netpolicy
from common.netpolicy import DestinationRefused, NetworkPolicy
from common.settings import SharedSettings

HOSTS = {
    "warehouse.example.com": ["34.120.0.10"],
    "metadata.internal": ["169.254.169.254"],
    "sneaky.example.com": ["34.120.0.11", "10.1.2.3"],  # one public, one private
    "localhost": ["127.0.0.1", "::1"],
    "v6only.example.com": ["2001:db8::5"],
    "mapped.example.com": ["::ffff:10.0.0.1"],
}


def fake_resolve(host: str, port: int) -> list[str]:
    if host in HOSTS:
        return HOSTS[host]
    if host.replace(".", "").isdigit() or ":" in host:
        return [host]
    raise DestinationRefused(f"destination host {host!r} does not resolve")


def policy(allowed: str = "") -> NetworkPolicy:
    return netpolicy.from_settings(
        SharedSettings(SKEIN_DESTINATION_ALLOWED_NETWORKS=allowed), fake_resolve
    )


def test_a_public_host_passes() -> None:
    assert policy().check("warehouse.example.com", 5432) == ["34.120.0.10"]


@pytest.mark.parametrize(
    ("host", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("localhost", "loopback"),
        ("metadata.internal", "link-local"),
        ("10.0.0.7", "private"),
        ("192.168.1.1", "private"),
        ("sneaky.example.com", "private"),
        ("0.0.0.0", "unspecified"),
        ("mapped.example.com", "private"),
        ("100.64.0.1", "shared"),
    ],
)
def test_non_public_addresses_are_refused_with_the_reason(host: str, kind: str) -> None:
    with pytest.raises(DestinationRefused, match=kind):
        policy().check(host, 5432)


def test_the_allow_list_lifts_listed_host_port_ranges_only() -> None:
    allowed = policy("127.0.0.1:5433, 10.0.0.0/8:5432-5439, [::1]:6000")
    assert allowed.check("127.0.0.1", 5433)
    assert allowed.check("10.9.9.9", 5439)
    assert allowed.check("::1", 6000)
    for host, port in (("127.0.0.1", 5434), ("10.9.9.9", 5440), ("192.168.0.1", 5432)):
        with pytest.raises(DestinationRefused):
            allowed.check(host, port)
    with pytest.raises(DestinationRefused):  # ::1 resolves too, on a port not listed
        allowed.check("localhost", 5433)


def test_the_platforms_own_services_are_refused_even_when_allowed() -> None:
    everything = policy("0.0.0.0/0, ::/0")
    with pytest.raises(DestinationRefused, match="control database"):
        everything.check("127.0.0.1", 5432, database="skein")
    assert everything.check("127.0.0.1", 5432, database="another")  # same server, other db
    with pytest.raises(DestinationRefused, match="Kafka"):
        everything.check("127.0.0.1", 29092)
    with pytest.raises(DestinationRefused, match="S3"):
        everything.check_url("http://127.0.0.1:8333")
    with pytest.raises(DestinationRefused, match="spool"):
        everything.check("localhost", 8081)


def test_hosts_that_do_not_resolve_or_name_a_socket_are_refused() -> None:
    for host in ("", "/var/run/postgresql", "nowhere.invalid", "a,b"):
        with pytest.raises(DestinationRefused):
            policy("0.0.0.0/0").check(host, 5432)


def test_each_destination_type_is_checked_at_its_endpoints() -> None:
    strict = policy()
    cases = [
        ("postgres", {"dsn_params": {"host": "127.0.0.1", "port": "5432", "dbname": "skein"}}),
        ("redshift", {"dsn_params": {"host": "10.0.0.1"}, "s3_bucket": "b"}),
        ("redshift", {"dsn_params": {"host": "34.120.0.10"}, "s3_endpoint": "http://10.0.0.2"}),
        ("snowflake", {"account": "a", "host": "metadata.internal"}),
        ("bigquery", {"project": "p", "api_endpoint": "http://169.254.169.254/"}),
    ]
    for type_, config in cases:
        with pytest.raises(DestinationRefused):
            netpolicy.check_destination(strict, type_, config)
    netpolicy.check_destination(strict, "bigquery", {"project": "p"})  # Google's own endpoint


def test_the_local_stack_allows_its_demo_warehouse_and_hook_receivers_and_production_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SKEIN_DESTINATION_ALLOWED_NETWORKS", raising=False)
    assert SharedSettings().destination_allowed_networks == "127.0.0.1:5433,127.0.0.1:8790-8799"
    assert SharedSettings(SKEIN_ENV="staging").destination_allowed_networks == ""


def test_the_loader_connects_to_the_address_it_vetted_not_a_rebound_one() -> None:
    """DNS rebinding: the name resolves to a public address when checked and to the metadata
    service a moment later. The session's libpq parameters carry the vetted address
    (``hostaddr``), so libpq never resolves the name again."""
    from services.loaders.postgres.connection import SessionLimits, connection_params

    answers = iter([["34.120.0.10"], ["169.254.169.254"]])

    def resolve(host: str, port: int) -> list[str]:
        return next(answers) if host == "rebind.example.com" else fake_resolve(host, port)

    rebinding = netpolicy.from_settings(SharedSettings(), resolve)
    config = {"dsn_params": {"host": "rebind.example.com", "dbname": "w", "user": "u"}}
    vetted = netpolicy.check_destination(rebinding, "postgres", config)
    assert vetted == {"rebind.example.com": ["34.120.0.10"]}
    pinned = {host: found[0] for host, found in vetted.items()}
    params = connection_params(config, {}, SessionLimits(), "test", pinned)
    assert (params["host"], params["hostaddr"]) == ("rebind.example.com", "34.120.0.10")
    # Without a pin (nothing vetted for that host) libpq resolves the name itself.
    assert "hostaddr" not in connection_params(config, {}, SessionLimits(), "test")


def test_plain_text_endpoints_need_the_allow_list_even_on_a_public_address() -> None:
    """Drivers speaking HTTP resolve the name again and cannot be pinned: over plain text, only
    listed networks may be reached; over TLS the certificate checks the name."""
    strict = policy()
    for type_, config in (
        ("bigquery", {"project": "p", "api_endpoint": "http://warehouse.example.com"}),
        ("snowflake", {"account": "a", "host": "warehouse.example.com", "protocol": "http"}),
        ("redshift", {"dsn_params": {"host": "34.120.0.10"}, "s3_endpoint": "http://34.1.1.1"}),
    ):
        with pytest.raises(DestinationRefused, match="plain-text"):
            netpolicy.check_destination(strict, type_, config)
    netpolicy.check_destination(
        strict, "snowflake", {"account": "a", "host": "warehouse.example.com"}
    )
    netpolicy.check_destination(
        strict, "bigquery", {"project": "p", "api_endpoint": "https://warehouse.example.com"}
    )
    listed = policy("34.120.0.10:80")
    netpolicy.check_destination(
        listed, "bigquery", {"project": "p", "api_endpoint": "http://warehouse.example.com"}
    )


@pytest.mark.parametrize(
    ("sslmode", "expected_host"),
    [("disable", "34.120.0.10"), (None, "34.120.0.10"), ("verify-full", "rebind.example.com")],
)
def test_the_redshift_loader_connects_to_the_vetted_address(
    monkeypatch: pytest.MonkeyPatch, sslmode: str | None, expected_host: str
) -> None:
    """redshift-connector resolves the host itself: the loader gives it the vetted address,
    except under verify-full, where TLS checks the name (which a rebound host cannot pass)."""
    import redshift_connector

    from services.loaders.postgres.connection import SessionLimits
    from services.loaders.redshift import connection

    seen: dict[str, object] = {}

    class Refused(Exception):
        pass

    def fake_connect(**kwargs: object) -> object:
        seen.update(kwargs)
        raise Refused

    monkeypatch.setattr(redshift_connector, "connect", fake_connect)
    dsn = {"host": "rebind.example.com", "dbname": "dev", "user": "u"}
    if sslmode:
        dsn["sslmode"] = sslmode
    with pytest.raises(Refused):
        connection.connect(
            {"dsn_params": dsn}, {}, SessionLimits(), {"rebind.example.com": "34.120.0.10"}
        )
    assert seen["host"] == expected_host
    assert seen["tcp_keepalive"] is True and seen["timeout"] == SessionLimits().connect_timeout_s
