"""When an integration runs next: its cron schedule, or a back-off retry after failures (pure)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from croniter import croniter


class ScheduleError(ValueError):
    """Not a cron expression the extractor understands."""


def check(expression: str) -> str:
    """``expression`` if it is a valid cron expression (5 fields, or 6 with seconds last)."""
    fields = expression.split()
    if not (len(fields) in (5, 6) or (len(fields) == 1 and fields[0].startswith("@"))):
        raise ScheduleError(
            f"schedule {expression!r}: expected 5 cron fields (minute hour day month weekday), "
            "optionally a 6th for seconds, or a nickname such as @hourly"
        )
    if not croniter.is_valid(expression):
        raise ScheduleError(f"schedule {expression!r} is not a valid cron expression")
    return " ".join(fields)


def next_run(expression: str, after: datetime) -> datetime:
    """The first time strictly after ``after`` that the schedule fires (UTC)."""
    following = croniter(expression, after.astimezone(UTC)).get_next(datetime)
    assert isinstance(following, datetime)
    return following.astimezone(UTC)


def retry_delay(
    failures: int, base_s: float, cap_s: float, rng: random.Random | None = None
) -> float:
    """Seconds to wait after the ``failures``-th failure in a row: min(cap, base·2^(n-1)),
    jittered into [½, 1) of that so that many failing integrations do not retry in step."""
    exponent = max(0, failures - 1)
    delay = cap_s if exponent >= 63 else min(cap_s, base_s * 2**exponent)
    return delay * (0.5 + 0.5 * (rng or random).random())


def after_failure(
    expression: str, now: datetime, failures: int, base_s: float, cap_s: float
) -> datetime:
    """Next attempt after a failed run: the back-off retry, or the schedule if it comes sooner."""
    retry = now + timedelta(seconds=retry_delay(failures, base_s, cap_s))
    return min(retry, next_run(expression, now))
