"""Hook deliveries: the signature a receiver checks, the retry schedule, the event names."""

from __future__ import annotations

import hashlib
import hmac
import time

import pytest

from common import control
from services.control import hooks
from services.control.delivery import retry_delay, signature, verify
from services.control.settings import ControlSettings


def test_the_signature_is_hmac_sha256_over_the_timestamp_and_the_body() -> None:
    body = b'{"id":"e1"}'
    header = signature(b"secret", 1_800_000_000, body)
    expected = hmac.new(b"secret", b"1800000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1800000000,v1={expected}"


def test_a_receiver_refuses_a_changed_body_another_secret_or_an_old_timestamp() -> None:
    body = b'{"id":"e1"}'
    now = int(time.time())
    assert verify(b"secret", signature(b"secret", now, body), body)
    assert not verify(b"secret", signature(b"secret", now, body), body + b" ")
    assert not verify(b"other", signature(b"secret", now, body), body)
    assert not verify(b"secret", signature(b"secret", now - 3600, body), body)
    assert not verify(b"secret", "v1=00", body)


def test_retries_back_off_doubling_to_the_cap() -> None:
    s = ControlSettings(hook_retry_base_s=2, hook_retry_max_s=60)
    assert [retry_delay(s, n, 1.0) for n in (1, 2, 3, 4, 5, 6, 30)] == [2, 4, 8, 16, 32, 60, 60]
    assert retry_delay(s, 1, 1.2) == pytest.approx(2.4)


def test_only_known_events_can_be_subscribed() -> None:
    assert hooks.check_events(["load.completed", " batch.dead", "load.completed"]) == [
        "load.completed",
        "batch.dead",
    ]
    with pytest.raises(control.ControlError, match=r"unknown event load\.done"):
        hooks.check_events(["load.done"])
    with pytest.raises(control.ControlError, match="at least one"):
        hooks.check_events([" "])
