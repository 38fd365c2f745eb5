"""The console's overview: the pipeline's figures from Prometheus, charted over the last hour
and the last day, and the alerts that fire.

The queries are the Grafana dashboard's (``deploy/grafana/dashboards/skein.json``), its
``$client_id`` variable set to every client (``.*``), or to the viewer's own client for a client
user (who then sees only the panels filtered by client, and only its own alerts);
``tests/unit/test_console_overview.py`` checks each one is in the dashboard verbatim, so the
two never drift apart.

Invariants:

- ``gather`` never raises because of Prometheus: a panel it could not fill carries ``error``
  (said once per panel, in words a user can read; the address and the cause go to the log),
  and the page renders.
- A page stays small whatever the number of clients: a chart draws at most ``MAX_SERIES``
  lines (the largest by their peak in the window, the rest summed as one "others" line), and
  at most ``MAX_ALERTS`` alerts are listed (with a count per alert name of them all).
- So does what Prometheus sends: a query with a series per client (``per_client_series``) is
  asked, in an operator's overview, for its ``MAX_SERIES - 1`` largest series at each step and
  one more summing the rest at that step (``top_and_rest``), so the console reads at most
  ``MAX_SERIES`` points a step whatever the number of clients. The top series can change
  from step to step, so their union may be more: ``fold`` still bounds the chart (the extra
  are added to "others"), and at each step the lines drawn sum to the total (the headline).
  The dashboard's expression is kept verbatim inside the wrapper.
- Every request has short timeouts (connect 1 s, else 4 s), and all of them run at once (an
  hour of every query, a day of those not cached, and the alerts: at most 19 requests, within
  Prometheus's default 20 concurrent queries), so a page waits for the slowest, not the sum.
- A day chart ends on a 10-min step and is kept (per process, per client filter) until the
  next step: it is the same for every view meanwhile. At a new step the previous step's chart
  is shown at once while a background task (one per process and cache key) fetches the new
  one; its failures are logged and it is tried again at the next view. Only a view with no
  chart from this step or the previous one (a process's first, or the first after a step of
  failed refreshes) waits for the day queries. Measured on the local stack (two shared
  cores): 16-40 ms a warm overview, about as much the first of a step, ~200 ms one that
  waits for the day queries.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import re
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from services.control.console.charts import Series, line_chart, number
from services.control.settings import ControlSettings

log = logging.getLogger("skein.control.console")

MAX_SERIES = 6  # lines a chart draws: the 5 largest, then the rest summed
MAX_ALERTS = 10  # the most severe; then a count per alert name
TIMEOUT = httpx.Timeout(4.0, connect=1.0)
SEVERITY_ORDER = {"page": 0, "warn": 1, "info": 2}


@dataclass(frozen=True)
class Query:
    """One target of a dashboard panel: its PromQL and its legend (Grafana's legendFormat).
    ``per_client_series``: the query has a series per client (``by (client_id)``), so an
    operator's overview asks Prometheus for the largest few and the sum of the rest."""

    expr: str
    legend: str
    per_client_series: bool = False


@dataclass(frozen=True)
class Panel:
    """A figure of the overview. ``total``: its headline is the sum over all its series (the
    ingest rate of every client), else each series' current value; ``per_client``: its
    queries are filtered by the client variable (a client user sees it)."""

    key: str
    title: str
    unit: str
    queries: tuple[Query, ...]
    total: bool = False
    chart_unit: str = ""  # the axes' unit: short, as they have 48 px

    @property
    def per_client(self) -> bool:
        return all("$client_id" in q.expr for q in self.queries)


@dataclass(frozen=True)
class Window:
    label: str
    seconds: int
    step: int


HOUR = Window("last hour", 3600, 30)
DAY = Window("last day", 86400, 600)

# The same strings as the dashboard's targets (test_console_overview checks it).
PANELS: tuple[Panel, ...] = (
    Panel(
        "ingest",
        "Ingest (records/s accepted by the gate)",
        "records/s",
        (
            Query(
                "sum by (client_id) "
                '(rate(skein_gate_records_accepted_total{client_id=~"$client_id"}[1m]))',
                "client {{client_id}}",
                per_client_series=True,
            ),
        ),
        total=True,
    ),
    Panel(
        "kafka_isr",
        "Kafka ISR (partitions)",
        "",
        (
            Query("sum(kafka_server_replicamanager_underreplicatedpartitions)", "under-replicated"),
            Query("sum(kafka_server_replicamanager_underminisrpartitioncount)", "under min ISR"),
            Query("sum(kafka_server_replicamanager_atminisrpartitioncount)", "at min ISR"),
            Query("max(kafka_controller_offlinepartitionscount)", "offline"),
        ),
    ),
    Panel(
        "lag",
        "Streamery lag (records not yet durable in S3 + spool)",
        "records",
        (Query("sum(skein_streamery_lag_records)", "lag"),),
        total=True,
    ),
    Panel(
        "spool",
        "Spool depth by state (batches)",
        "",
        (Query("sum by (state) (skein_spool_batches)", "{{state}}"),),
    ),
    Panel(
        "loads",
        "Loads per minute by result",
        "",
        (
            Query(
                "sum by (result) "
                '(rate(skein_loader_loads_total{client_id=~"$client_id"}[1m])) * 60',
                "{{result}}",
            ),
        ),
    ),
    Panel(
        "freshness",
        "Freshness at load, p99 by destination type",
        "s",
        (
            Query(
                "histogram_quantile(0.99, sum by (destination_type, le) "
                "(rate(skein_loader_freshness_seconds_bucket[10m])))",
                "{{destination_type}} p99",
            ),
        ),
        chart_unit="s",
    ),
)


class QueryFailed(Exception):
    """Prometheus answered, but not with a result."""


@dataclass(frozen=True)
class Rest(Series):
    """The sum of the series Prometheus did not send (see ``top_and_rest``): drawn last."""


REST_LABEL = "skein_console"  # the label (= "others") of the rest's series in an answer


def promql(expr: str, client_id: int | None) -> str:
    """The dashboard's query with its client variable set (all clients: ``.*``)."""
    return expr.replace("$client_id", ".*" if client_id is None else str(int(client_id)))


def top_and_rest(expr: str, k: int = MAX_SERIES - 1) -> str:
    """``expr``'s ``k`` largest series at each step, and one more, labelled
    ``skein_console="others"``, summing the others at that step (no point where there are none:
    the sum of nothing). One query (not two), to stay within Prometheus's concurrent queries;
    ``unless`` rather than ``sum - sum(topk)``: no rounding residue, never negative."""
    top = f"topk({k}, {expr})"
    return f'{top} or label_replace(sum(({expr}) unless {top}), "{REST_LABEL}", "others", "", "")'


def query_text(q: Query, client_id: int | None) -> str:
    """What the overview asks Prometheus for ``q``: the dashboard's query, bounded to
    ``MAX_SERIES`` series in an operator's overview if it has a series per client."""
    expr = promql(q.expr, client_id)
    return top_and_rest(expr) if q.per_client_series and client_id is None else expr


def legend(template: str, labels: dict[str, str]) -> str:
    """Grafana's legendFormat: ``{{label}}`` becomes the series' label value."""
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template)


def fold(series: Sequence[Series], limit: int = MAX_SERIES) -> list[Series]:
    """At most ``limit`` series: the largest by their peak in the window, in their order (so
    colours stay put), then one summing the rest (with the ``Rest`` Prometheus sent, if any:
    then it is always drawn, as "others", and the others fill ``limit - 1`` lines)."""
    lines = [s for s in series if not isinstance(s, Rest)]
    sent = [s for s in series if isinstance(s, Rest)]
    if len(lines) + len(sent) <= limit:
        return [*lines, *sent]
    ranked = sorted(
        range(len(lines)), key=lambda i: -max((v for _, v in lines[i].points), default=0.0)
    )
    kept, rest = sorted(ranked[: limit - 1]), ranked[limit - 1 :]
    summed: dict[float, float] = {}
    for s in [*(lines[i] for i in rest), *sent]:
        for t, v in s.points:
            summed[t] = summed.get(t, 0.0) + v
    points = sorted(summed.items())
    others = Rest("others", points) if sent else Series(f"{len(rest)} others", points)
    return [*(lines[i] for i in kept), others]


def shown(value: float, unit: str) -> str:
    """A value as the page writes it: durations in s/min/h, counts as the charts do."""
    if unit == "s" and value >= 120:
        minutes = value / 60
        return f"{minutes:.0f} min" if minutes < 120 else f"{minutes / 60:.1f} h"
    return number(value, unit)


Labelled = tuple[dict[str, str], list[tuple[float, float]]]


def answer(r: httpx.Response) -> dict[str, Any]:
    """The body of a successful API answer (else ``QueryFailed`` with Prometheus's reason)."""
    try:
        body: dict[str, Any] = r.json()
    except ValueError:
        raise QueryFailed(f"HTTP {r.status_code}, not JSON") from None
    if r.status_code != 200 or body.get("status") != "success":
        raise QueryFailed(str(body.get("error") or f"HTTP {r.status_code}"))
    return body


async def query_range(
    http: httpx.AsyncClient, expr: str, start: float, end: float, step: int
) -> list[Labelled]:
    """Each series of one query over [start, end]: its labels and its finite points (a
    quantile of no loads is NaN: a gap, not a point)."""
    r = await http.get(
        "/api/v1/query_range",
        params={"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": str(step)},
    )
    data = answer(r)["data"]
    if data.get("resultType") != "matrix":
        raise QueryFailed(f"a {data.get('resultType')} instead of a range")
    found: list[Labelled] = []
    for item in data["result"]:
        points = [(float(t), float(v)) for t, v in item["values"]]
        found.append((item["metric"], [(t, v) for t, v in points if math.isfinite(v)]))
    return found


async def panel_series(
    http: httpx.AsyncClient, panel: Panel, client_id: int | None, window: Window, end: float
) -> list[Series]:
    """Every series of the panel's queries over the window, named by their legends (the sum
    of those Prometheus did not send: a ``Rest``)."""
    results = await asyncio.gather(
        *(
            query_range(http, query_text(q, client_id), end - window.seconds, end, window.step)
            for q in panel.queries
        )
    )
    return [
        Rest("others", points)
        if q.per_client_series and client_id is None and labels.get(REST_LABEL) == "others"
        else Series(legend(q.legend, labels), points)
        for q, found in zip(panel.queries, results, strict=True)
        for labels, points in found
    ]


async def firing_alerts(http: httpx.AsyncClient, client_id: int | None) -> list[dict[str, str]]:
    """The firing alerts (a client user's: only those labelled with its client), most severe
    first."""
    found = []
    for alert in answer(await http.get("/api/v1/alerts"))["data"]["alerts"]:
        labels = alert.get("labels") or {}
        if alert.get("state") != "firing":
            continue
        if client_id is not None and labels.get("client_id") != str(client_id):
            continue
        name = str(labels.get("alertname", "alert"))
        active = str(alert.get("activeAt") or "")
        found.append(
            {
                "name": name,
                "severity": str(labels.get("severity", "")),
                "summary": str((alert.get("annotations") or {}).get("summary") or name),
                # RFC 3339 with nanoseconds: minutes are enough.
                "since": f"{active[:10]} {active[11:16]} UTC" if len(active) >= 16 else "",
                "since_iso": f"{active[:10]}T{active[11:16]}Z" if len(active) >= 16 else "",
            }
        )
    found.sort(key=lambda a: (SEVERITY_ORDER.get(a["severity"], 3), a["name"], a["since"]))
    return found


def failure_text(exc: BaseException) -> str:
    """What a panel says when its figures are missing (the log has the details)."""
    if isinstance(exc, httpx.TimeoutException):
        return "No figures: Prometheus did not answer in time."
    if isinstance(exc, httpx.TransportError):
        return "No figures: Prometheus is unreachable."
    if isinstance(exc, QueryFailed):
        return f"No figures: Prometheus refused the query ({exc})."
    return "No figures: Prometheus's answer could not be read."


def now_values(series: Sequence[Series], end: float, step: int) -> list[tuple[str, float]]:
    """Each series' value at ``end`` (a series whose last point is older has no value now)."""
    return [(s.name, s.points[-1][1]) for s in series if s.points and s.points[-1][0] >= end - step]


def figures(
    panel: Panel,
    hour: list[Series] | BaseException,
    day: list[Series] | BaseException,
    hour_end: float,
    day_end: float,
) -> dict[str, Any]:
    """A panel as the template reads it."""
    out: dict[str, Any] = {
        "key": panel.key,
        "title": panel.title,
        "headline": None,
        "current": [],
        "hour": None,
        "day": None,
        "error": None,
    }
    errors = [failure_text(r) for r in (hour, day) if isinstance(r, BaseException)]
    if errors:
        out["error"] = errors[0]
    if not isinstance(hour, BaseException):
        current = now_values(hour, hour_end, HOUR.step)
        folded = fold(hour)
        if panel.total:
            out["headline"] = shown(sum(v for _, v in current), panel.unit) if current else None
        else:
            out["current"] = [
                (name, shown(v, panel.unit)) for name, v in now_values(folded, hour_end, HOUR.step)
            ]
        out["hour"] = line_chart(
            f"{panel.title}, {HOUR.label}",
            folded,
            hour_end - HOUR.seconds,
            hour_end,
            panel.chart_unit,
        )
    if not isinstance(day, BaseException):
        out["day"] = line_chart(
            f"{panel.title}, {DAY.label}",
            fold(day),
            day_end - DAY.seconds,
            day_end,
            panel.chart_unit,
        )
    return out


@functools.cache
def tls() -> ssl.SSLContext:
    """One TLS context for every overview (making one costs ~20 ms: a page's budget)."""
    return httpx.create_ssl_context()


# Day charts by (Prometheus, client filter, end of the window): the window ends on a 10-min
# step, so until the next step a day chart is the same for every view (and its queries are
# the slowest: a day of every client's series). The previous step's are kept too: a view at a
# new step shows them while ``DAY_REFRESHES`` fetches the new ones.
DayKey = tuple[str, int | None, float]
DayCharts = dict[str, list[Series]]
DAY_CACHE: dict[DayKey, DayCharts] = {}
DAY_CACHE_SIZE = 64
DAY_REFRESHES: dict[DayKey, asyncio.Task[None]] = {}  # at most one running per key


def day_cache(key: DayKey) -> DayCharts:
    """The day charts kept for ``key`` (none yet: an empty entry), after dropping those older
    than its previous step and, past ``DAY_CACHE_SIZE`` entries, the oldest."""
    for old in [k for k in DAY_CACHE if k[2] < key[2] - DAY.step]:
        del DAY_CACHE[old]
    if key not in DAY_CACHE and len(DAY_CACHE) >= DAY_CACHE_SIZE:
        del DAY_CACHE[next(iter(DAY_CACHE))]  # the oldest entry
    return DAY_CACHE.setdefault(key, {})


def prometheus(
    settings: ControlSettings, transport: httpx.AsyncBaseTransport | None
) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=settings.prometheus_url, timeout=TIMEOUT, transport=transport, verify=tls()
    )


async def refresh_days(
    settings: ControlSettings,
    client_id: int | None,
    key: DayKey,
    panels: Sequence[Panel],
    transport: httpx.AsyncBaseTransport | None,
) -> None:
    """Fetch the day charts of ``panels`` for ``key`` into ``DAY_CACHE`` (in the background:
    no view waits for it). A chart that fails is not kept: the next view tries again."""
    try:
        async with prometheus(settings, transport) as http:
            outcomes = await asyncio.gather(
                *(panel_series(http, p, client_id, DAY, key[2]) for p in panels),
                return_exceptions=True,
            )
        days = day_cache(key)
        failed: list[BaseException] = []
        for p, outcome in zip(panels, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, Exception):
                    raise outcome  # cancelled: not Prometheus's doing
                failed.append(outcome)
            else:
                days[p.key] = fold(outcome)
        if failed:
            log.warning(
                "overview: %d of %d day charts failed in the background (tried again at the "
                "next view)",
                len(failed),
                len(outcomes),
                extra={"prometheus_url": settings.prometheus_url, "error": repr(failed[0])},
            )
    except Exception as exc:  # a task's exception would only be reported when collected
        log.warning(
            "overview: the day charts' refresh failed",
            extra={"prometheus_url": settings.prometheus_url, "error": repr(exc)},
        )


def start_refresh(
    settings: ControlSettings,
    client_id: int | None,
    key: DayKey,
    panels: Sequence[Panel],
    transport: httpx.AsyncBaseTransport | None,
) -> None:
    """``refresh_days`` as a task, unless one for ``key`` is running already."""
    running = DAY_REFRESHES.get(key)
    if running is not None and not running.done():
        return
    task = asyncio.create_task(refresh_days(settings, client_id, key, panels, transport))
    DAY_REFRESHES[key] = task  # also the task's reference: asyncio keeps only weak ones

    def forget(done: asyncio.Task[None]) -> None:
        if DAY_REFRESHES.get(key) is done:
            del DAY_REFRESHES[key]

    task.add_done_callback(forget)


async def gather(
    settings: ControlSettings,
    *,
    client_id: int | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """The overview page's context: ``panels`` (each: ``title``, ``headline`` or ``current``
    (name, value) pairs, ``hour`` and ``day`` charts, ``error``), the firing ``alerts`` (at
    most ``MAX_ALERTS``; ``alerts_hidden`` more, ``alert_counts`` by name), ``alerts_error``,
    ``updated`` and ``scoped`` (a client's own figures only).

    ``client_id``: a client user's overview (its own figures and alerts; the fleet's panels,
    Kafka, lag, spool and freshness by destination type, are left out). ``transport`` is for
    tests (a fake Prometheus)."""
    end = time.time() if now is None else now
    day_end = math.floor(end / DAY.step) * DAY.step
    panels = [p for p in PANELS if client_id is None or p.per_client]
    key = (settings.prometheus_url, client_id, day_end)
    days = day_cache(key)
    # The previous step's charts, shown while the background refreshes them; a panel without
    # one waits for its day query.
    before = DAY_CACHE.get((settings.prometheus_url, client_id, day_end - DAY.step), {})
    stale = [p for p in panels if p.key not in days and p.key in before]
    jobs = [(p, HOUR, end) for p in panels] + [
        (p, DAY, day_end) for p in panels if p.key not in days and p.key not in before
    ]
    async with prometheus(settings, transport) as http:
        charts, alerts = await asyncio.gather(
            asyncio.gather(
                *(panel_series(http, p, client_id, w, at) for p, w, at in jobs),
                return_exceptions=True,
            ),
            asyncio.gather(firing_alerts(http, client_id), return_exceptions=True),
        )
    if stale:  # started once this view's requests are done: they do not share Prometheus
        start_refresh(settings, client_id, key, stale, transport)
    outcomes = [*charts, *alerts]
    for outcome in outcomes:
        if isinstance(outcome, BaseException) and not isinstance(outcome, Exception):
            raise outcome  # cancelled: not Prometheus's doing
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    if failed:
        log.warning(
            "overview: %d of %d Prometheus requests failed",
            len(failed),
            len(outcomes),
            extra={"prometheus_url": settings.prometheus_url, "error": repr(failed[0])},
        )
    hours: dict[str, list[Series] | BaseException] = {}
    day_failures: dict[str, BaseException] = {}
    for (p, w, _), outcome in zip(jobs, charts, strict=True):
        if w is HOUR:
            hours[p.key] = outcome
        elif isinstance(outcome, BaseException):
            day_failures[p.key] = outcome
        else:
            days[p.key] = fold(outcome)  # kept small: what the chart draws

    def day(p: Panel) -> tuple[list[Series] | BaseException, float, float]:
        """The panel's day chart (this step's, else the previous step's), the hour's end and
        the day's."""
        if p.key in days:
            return days[p.key], end, day_end
        if p.key in before:
            return before[p.key], end, day_end - DAY.step
        return day_failures[p.key], end, day_end

    context: dict[str, Any] = {
        "panels": [figures(p, hours[p.key], *day(p)) for p in panels],
        "alerts": [],
        "alerts_hidden": 0,
        "alert_counts": [],
        "alerts_error": None,
        "updated": datetime.fromtimestamp(end, UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "scoped": client_id is not None,
    }
    found = alerts[0]
    if isinstance(found, BaseException):
        context["alerts_error"] = failure_text(found).replace("No figures", "No alerts")
    else:
        context["alerts"] = found[:MAX_ALERTS]
        context["alerts_hidden"] = len(found) - len(context["alerts"])
        counts: dict[str, int] = {}
        for a in found:
            counts[a["name"]] = counts.get(a["name"], 0) + 1
        context["alert_counts"] = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return context
