"""The console's overview: its queries are the Grafana dashboard's, it draws what a (fake)
Prometheus answers, keeps a page (and what Prometheus sends) small with many clients, shows
the previous day charts while it refreshes them, and says per panel when Prometheus fails
instead of failing the page (no servers: httpx.MockTransport)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from services.control.console import overview
from services.control.console.charts import Series
from services.control.console.web import TEMPLATES
from services.control.settings import ControlSettings
from support.stack import ROOT

NOW = 1_796_000_000.0  # a fixed clock: 2026-11-30 00:53:20 UTC
SETTINGS = ControlSettings(prometheus_url="http://prometheus.test:9090")

INGEST = overview.promql(overview.PANELS[0].queries[0].expr, None)
# What an operator's overview asks for INGEST (a series per client): the 5 largest at each
# step, and the sum of the rest labelled skein_console="others" (the fake evaluates it).
TOP_AND_REST = re.compile(
    r"topk\((?P<k>\d+), (?P<a>.+)\) or label_replace\(sum\(\((?P<b>.+)\) unless "
    r'topk\((?P<k2>\d+), (?P<c>.+)\)\), "skein_console", "others", "", ""\)'
)
LOADS = 'sum by (result) (rate(skein_loader_loads_total{client_id=~".*"}[1m])) * 60'
FRESHNESS = (
    "histogram_quantile(0.99, sum by (destination_type, le) "
    "(rate(skein_loader_freshness_seconds_bucket[10m])))"
)


@pytest.fixture(autouse=True)
def _no_cached_days() -> Iterator[None]:
    overview.DAY_CACHE.clear()
    yield
    overview.DAY_CACHE.clear()
    assert not overview.DAY_REFRESHES  # asyncio.run cancels what is left, which forgets it


def dashboard_targets() -> list[dict[str, Any]]:
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/skein.json").read_text())
    return [t for p in dashboard["panels"] for t in p["targets"]]


def series(labels: dict[str, str], value: Callable[[float], float | str]) -> Callable[..., Any]:
    """A fake series: ``value(t)`` at every step of the asked range."""

    def points(start: float, end: float, step: float) -> dict[str, Any]:
        ts = [start + i * step for i in range(int((end - start) // step) + 1)]
        return {"metric": labels, "values": [[t, str(value(t))] for t in ts]}

    return points


def constant(value: float) -> Callable[[float], float]:
    return lambda t: value


# A fleet of 12 clients ingesting 1..12 records/s, one idle partition set, a dead batch.
FLEET: dict[str, list[Callable[..., Any]]] = {
    INGEST: [series({"client_id": str(c)}, constant(float(c))) for c in range(1, 13)],
    "sum(kafka_server_replicamanager_underreplicatedpartitions)": [series({}, lambda t: 0)],
    "sum(kafka_server_replicamanager_underminisrpartitioncount)": [series({}, lambda t: 2)],
    "sum(kafka_server_replicamanager_atminisrpartitioncount)": [series({}, lambda t: 3)],
    "max(kafka_controller_offlinepartitionscount)": [series({}, lambda t: 0)],
    "sum(skein_streamery_lag_records)": [series({}, lambda t: 2500)],
    "sum by (state) (skein_spool_batches)": [
        series({"state": "dead"}, lambda t: 1),
        series({"state": "pending"}, lambda t: 40),
    ],
    LOADS: [series({"result": "ok"}, lambda t: 30), series({"result": "transient"}, lambda t: 6)],
    # No load for 10 min: the quantile is NaN, which is no value (not a crash).
    FRESHNESS: [series({"destination_type": "postgres"}, lambda t: "NaN")],
}
ALERTS = [
    {
        "labels": {"alertname": "SkeinRecordsRejected", "client_id": "3", "severity": "warn"},
        "annotations": {"summary": "client 3: 4 records rejected in 10 min"},
        "state": "firing",
        "activeAt": "2026-11-30T08:10:05.123456789Z",
    },
    {
        "labels": {"alertname": "SkeinDeadBatches", "client_id": "7", "severity": "page"},
        "annotations": {"summary": "client 7 has 1 dead batches"},
        "state": "firing",
        "activeAt": "2026-11-30T08:12:00Z",
    },
    {
        "labels": {"alertname": "SkeinTargetDown", "severity": "page"},
        "annotations": {"summary": "<b>gate</b> is down"},
        "state": "pending",
        "activeAt": "2026-11-30T08:13:00Z",
    },
]


class FakePrometheus:
    """Answers the HTTP API from ``FLEET`` and ``ALERTS``; remembers what it was asked."""

    def __init__(self, fleet: dict[str, list[Callable[..., Any]]] | None = None) -> None:
        self.fleet = FLEET if fleet is None else fleet
        self.asked: list[tuple[str, str, int]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/alerts":
            return httpx.Response(200, json={"status": "success", "data": {"alerts": ALERTS}})
        assert request.url.path == "/api/v1/query_range"
        p = request.url.params
        expr, start, end, step = p["query"], float(p["start"]), float(p["end"]), int(p["step"])
        self.asked.append((expr, p["start"], step))
        result = self.evaluate(expr, start, end, step)
        return httpx.Response(
            200, json={"status": "success", "data": {"resultType": "matrix", "result": result}}
        )

    def evaluate(self, expr: str, start: float, end: float, step: int) -> list[dict[str, Any]]:
        """A fleet's expression, or ``TOP_AND_REST`` of one: at each step its ``k`` largest
        series (only the steps where they are), and the sum of the others where there are."""
        bounded = TOP_AND_REST.fullmatch(expr)
        if bounded is None:
            return [make(start, end, step) for make in self.fleet.get(expr, [])]
        k, inner = int(bounded["k"]), bounded["a"]
        assert bounded["b"] == bounded["c"] == inner and int(bounded["k2"]) == k
        every = [make(start, end, step) for make in self.fleet[inner]]
        top: dict[int, list[list[Any]]] = {}
        rest: list[list[Any]] = []
        for i, t in enumerate(every[0]["values"] if every else []):
            at = sorted(range(len(every)), key=lambda j: -float(every[j]["values"][i][1]))
            for j in at[:k]:
                top.setdefault(j, []).append(every[j]["values"][i])
            if at[k:]:
                rest.append([t[0], str(sum(float(every[j]["values"][i][1]) for j in at[k:]))])
        return [{"metric": every[j]["metric"], "values": top[j]} for j in sorted(top)] + (
            [{"metric": {"skein_console": "others"}, "values": rest}] if rest else []
        )


def gather(handler: Callable[[httpx.Request], httpx.Response], **kw: Any) -> dict[str, Any]:
    return asyncio.run(
        overview.gather(SETTINGS, transport=httpx.MockTransport(handler), now=NOW, **kw)
    )


def render(context: dict[str, Any]) -> str:
    return TEMPLATES.get_template("overview.html").render(viewer=None, csrf="", htmx="x", **context)


def panel(context: dict[str, Any], key: str) -> dict[str, Any]:
    found: dict[str, Any] = next(p for p in context["panels"] if p["key"] == key)
    return found


def text(html: str) -> str:
    """The page's text, tags and repeated white space removed."""
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


# --- the queries ----------------------------------------------------------------------------


def test_every_overview_query_is_a_dashboard_query_with_its_legend() -> None:
    targets = {
        (t["expr"].replace("$client_id", ".*"), t["legendFormat"]) for t in dashboard_targets()
    }
    for p in overview.PANELS:
        for q in p.queries:
            assert (overview.promql(q.expr, None), q.legend) in targets, (p.key, q.expr)
    # The figures the issue asks for, each a panel.
    assert [p.key for p in overview.PANELS] == [
        "ingest",
        "kafka_isr",
        "lag",
        "spool",
        "loads",
        "freshness",
    ]


def test_the_dashboard_panels_have_unique_ids_and_do_not_overlap() -> None:
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/skein.json").read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in dashboard["panels"]:
        g = p["gridPos"]
        area = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not area & cells, p["title"]
        assert g["x"] + g["w"] <= 24, p["title"]
        cells |= area
        assert {t["refId"] for t in p["targets"]} == {chr(65 + i) for i in range(len(p["targets"]))}


def test_a_client_users_overview_is_filtered_to_its_client() -> None:
    fake = FakePrometheus()
    context = gather(fake, client_id=7)
    assert [p["key"] for p in context["panels"]] == ["ingest", "loads"]
    assert context["scoped"] is True
    asked = {expr for expr, _, _ in fake.asked}
    assert asked == {overview.promql(p.queries[0].expr, 7) for p in overview.PANELS if p.per_client}
    assert all('client_id=~"7"' in expr for expr in asked)
    assert [a["name"] for a in context["alerts"]] == ["SkeinDeadBatches"]


# --- what a page shows ----------------------------------------------------------------------


def test_gather_draws_each_panel_with_its_current_values_and_the_firing_alerts() -> None:
    fake = FakePrometheus()
    context = gather(fake)

    # Every panel's queries over the last hour (30 s steps, ending now) and day (10-min steps).
    hours = {expr for expr, start, step in fake.asked if step == 30}
    days = {expr for expr, start, step in fake.asked if step == 600}
    every = {overview.promql(q.expr, None) for p in overview.PANELS for q in p.queries}
    # ... the ingest by client bounded by Prometheus (top 5 and the rest), as one query.
    bounded = {e for e in hours if TOP_AND_REST.fullmatch(e)}
    assert [(m["k"], m["a"]) for m in map(TOP_AND_REST.fullmatch, bounded) if m] == [("5", INGEST)]
    assert hours == days == every - {INGEST} | bounded
    assert len(fake.asked) + 1 <= 19  # and the alerts: within Prometheus's 20 at once
    assert all(float(start) == NOW - 3600 for _, start, step in fake.asked if step == 30)

    assert panel(context, "ingest")["headline"] == "78 records/s"  # 1 + 2 + ... + 12
    # 12 + 11 + 10 + 9 + 8, and the rest (1 + ... + 7)
    assert "client 8: 8</li><li>" in panel(context, "ingest")["hour"]
    assert "others: 28</li></ul>" in panel(context, "ingest")["hour"]
    assert panel(context, "lag")["headline"] == "2.5k records"
    assert panel(context, "kafka_isr")["current"] == [
        ("under-replicated", "0"),
        ("under min ISR", "2"),
        ("at min ISR", "3"),
        ("offline", "0"),
    ]
    assert panel(context, "spool")["current"] == [("dead", "1"), ("pending", "40")]
    assert panel(context, "loads")["current"] == [("ok", "30"), ("transient", "6")]
    assert panel(context, "freshness")["current"] == []
    for p in context["panels"]:
        assert p["error"] is None
        assert "<svg" in p["hour"] and "<svg" in p["day"]
    # The time axis: its ends, with the date over a day (HH:MM alone would read the same).
    axis = r'text-anchor="(?:start|end)">([^<]+)<'
    assert re.findall(axis, panel(context, "lag")["hour"])[-2:] == ["23:53", "00:53"]
    assert re.findall(axis, panel(context, "lag")["day"])[-2:] == ["29 Nov 00:50", "30 Nov 00:50"]

    # Firing only (not pending), the most severe first; summaries are escaped when rendered.
    assert [(a["name"], a["since"]) for a in context["alerts"]] == [
        ("SkeinDeadBatches", "2026-11-30 08:12 UTC"),
        ("SkeinRecordsRejected", "2026-11-30 08:10 UTC"),
    ]
    assert context["alerts_error"] is None


def test_a_thousand_clients_make_five_lines_and_one_for_the_rest() -> None:
    fleet = dict(FLEET)
    fleet[INGEST] = [series({"client_id": str(c)}, constant(float(c))) for c in range(1, 1001)]
    fake = FakePrometheus(fleet)
    context = gather(fake)
    ingest = panel(context, "ingest")
    assert ingest["headline"] == "500.5k records/s"  # the total is of every client
    for chart in (ingest["hour"], ingest["day"]):
        assert chart.count("<polyline") == overview.MAX_SERIES
        legend = text(chart.split('<ul class="legend">')[1])
        assert "client 1000: 1.0k" in legend and "client 996: 996" in legend
        assert "others: 495.5k" in legend  # 1 + ... + 995
        assert "client 995:" not in legend
    # Prometheus did the reduction: the console never asked for every client's series.
    asked = [expr for expr, _, _ in fake.asked]
    assert INGEST not in asked
    assert sum(1 for e in asked if TOP_AND_REST.fullmatch(e)) == 2  # the hour and the day
    # The page is the size of a dozen clients' (each chart: 6 lines of 121 or 145 points).
    overview.DAY_CACHE.clear()
    assert len(render(context)) < 1.05 * len(render(gather(FakePrometheus())))


def test_when_the_top_clients_change_the_lines_drawn_still_sum_to_the_total() -> None:
    # 8 clients: client c sends c records/s in the first half hour, then 9 - c: the top 5 at
    # each step are 8..4, then 1..5, so Prometheus sends all 8 (each in the top for a while).
    def swapping(c: int) -> Callable[[float], float]:
        return lambda t: c if t < NOW - 1800 else 9 - c

    fleet = dict(FLEET)
    fleet[INGEST] = [series({"client_id": str(c)}, swapping(c)) for c in range(1, 9)]
    fake = FakePrometheus(fleet)

    async def hour() -> list[Series]:
        async with httpx.AsyncClient(
            base_url=SETTINGS.prometheus_url, transport=httpx.MockTransport(fake)
        ) as http:
            return await overview.panel_series(http, overview.PANELS[0], None, overview.HOUR, NOW)

    sent = asyncio.run(hour())
    assert len(sent) == 9 and isinstance(sent[-1], overview.Rest)
    drawn = overview.fold(sent)
    assert len(drawn) == overview.MAX_SERIES and drawn[-1].name == "others"
    assert overview.fold(drawn) == drawn  # the day cache keeps folded charts: folded again
    totals: dict[float, float] = {}
    for s in drawn:
        for t, v in s.points:
            totals[t] = totals.get(t, 0.0) + v
    assert len(totals) == 121 and set(totals.values()) == {36.0}  # 1 + ... + 8 at each step

    context = gather(fake)
    assert panel(context, "ingest")["headline"] == "36 records/s"
    assert panel(context, "ingest")["hour"].count("<polyline") == overview.MAX_SERIES


def test_the_page_renders_the_panels_charts_and_alerts_without_inline_style_or_script() -> None:
    html = render(gather(FakePrometheus()))
    page = text(html)
    assert "<h1>Overview</h1>" in html
    assert html.count('<section class="panel"') == len(overview.PANELS)
    assert "Ingest (records/s accepted by the gate)" in page
    assert "Now: 78 records/s" in page
    assert "under min ISR 2" in page
    assert html.count('<svg class="chart"') == 2 * len(overview.PANELS)  # hour and day
    assert "SkeinDeadBatches (page): client 7 has 1 dead batches firing since" in page
    assert "No alerts firing" not in page
    assert "<b>gate</b>" not in html  # a pending alert, and escaped anyway
    assert " style=" not in html and "<style" not in html
    assert all("src=" in tag for tag in re.findall(r"<script[^>]*>", html))


def test_no_alerts_firing_is_said() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/alerts":
            return httpx.Response(200, json={"status": "success", "data": {"alerts": []}})
        return FakePrometheus()(request)

    assert "No alerts firing." in text(render(gather(handler)))


def test_many_alerts_are_listed_up_to_a_bound_and_counted() -> None:
    many = [
        {
            "labels": {"alertname": "SkeinFreshnessOverObjective", "client_id": str(c)},
            "annotations": {"summary": f"client {c} is stale"},
            "state": "firing",
            "activeAt": "2026-11-30T08:00:00Z",
        }
        for c in range(500)
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/alerts":
            return httpx.Response(200, json={"status": "success", "data": {"alerts": many}})
        return FakePrometheus()(request)

    context = gather(handler)
    assert len(context["alerts"]) == overview.MAX_ALERTS
    assert context["alerts_hidden"] == 500 - overview.MAX_ALERTS
    hidden = 500 - overview.MAX_ALERTS
    assert f"And {hidden} more. All 500 by name: SkeinFreshnessOverObjective 500." in text(
        render(context)
    )


# --- when Prometheus fails ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failure", "said"),
    [
        (httpx.ConnectError("connection refused"), "Prometheus is unreachable."),
        (httpx.ReadTimeout("timed out"), "Prometheus did not answer in time."),
    ],
)
def test_prometheus_down_is_said_per_panel_and_the_page_renders(
    failure: Exception, said: str, caplog: pytest.LogCaptureFixture
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise failure

    context = gather(handler)
    assert [p["error"] for p in context["panels"]] == [f"No figures: {said}"] * len(overview.PANELS)
    assert all(p["hour"] is None and p["day"] is None for p in context["panels"])
    assert context["alerts_error"] == f"No alerts: {said}"
    page = text(render(context))
    assert page.count(f"No figures: {said}") == len(overview.PANELS)
    assert "No alerts firing" not in page
    # The address is in the log only.
    assert [getattr(r, "prometheus_url", None) for r in caplog.records] == [SETTINGS.prometheus_url]
    assert "prometheus.test" not in page


def test_a_refused_query_is_said_on_its_panel_only() -> None:
    fake = FakePrometheus()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.params.get("query") == "sum(skein_streamery_lag_records)":
            return httpx.Response(
                422,
                json={"status": "error", "errorType": "execution", "error": "query timed out"},
            )
        if request.url.params.get("query") == LOADS:
            return httpx.Response(502, text="<html>bad gateway</html>")
        return fake(request)

    context = gather(handler)
    assert panel(context, "lag")["error"] == (
        "No figures: Prometheus refused the query (query timed out)."
    )
    assert panel(context, "loads")["error"] == (
        "No figures: Prometheus refused the query (HTTP 502, not JSON)."
    )
    assert panel(context, "ingest")["error"] is None
    assert panel(context, "ingest")["headline"] == "78 records/s"
    render(context)


def test_day_charts_are_kept_until_their_next_step() -> None:
    fake = FakePrometheus()
    gather(fake)
    first = len(fake.asked)

    def days_fail(request: httpx.Request) -> httpx.Response:
        if request.url.params.get("step") == "600":
            raise httpx.ConnectError("down")
        return fake(request)

    context = gather(days_fail)  # same 10-min step: the day charts are the kept ones
    assert all(p["error"] is None and "<svg" in p["day"] for p in context["panels"])
    assert len(fake.asked) - first == first // 2  # only the hour's queries again

    # Two steps on, the kept ones are too old to show (and there are none from the step
    # before): the view asks for the day at once, and says it failed.
    later = asyncio.run(
        overview.gather(
            SETTINGS, transport=httpx.MockTransport(days_fail), now=NOW + 2 * overview.DAY.step
        )
    )
    assert all(p["day"] is None and p["error"] for p in later["panels"])
    assert all("<svg" in p["hour"] for p in later["panels"])


def test_a_new_step_shows_the_previous_day_charts_while_they_are_refreshed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakePrometheus()
    gather(fake)  # a process's first view waits for the day
    axis = r'text-anchor="(?:start|end)">([^<]+)<'
    later = NOW + overview.DAY.step  # 01:03:20, the day now ends at 01:00
    queries = sum(len(p.queries) for p in overview.PANELS)  # a day request each
    charts = len(overview.PANELS)

    async def views() -> None:
        held = asyncio.Event()
        failing = True
        days_asked: list[str] = []

        async def handler(request: httpx.Request) -> httpx.Response:
            if request.url.params.get("step") == "600":
                days_asked.append(request.url.params["query"])
                await held.wait()
                if failing:
                    raise httpx.ConnectError("down")
            return fake(request)

        async def view(at: float) -> dict[str, Any]:
            # The day requests are held: a view waiting for them would time out.
            context: dict[str, Any] = await asyncio.wait_for(
                overview.gather(SETTINGS, transport=httpx.MockTransport(handler), now=at), 2
            )
            return context

        def refresh() -> asyncio.Task[None]:
            (task,) = overview.DAY_REFRESHES.values()
            return task

        # A new step: the previous day charts at once, one refresh for both views.
        for at in (later, later + 60):
            context = await view(at)
            for p in context["panels"]:
                assert p["error"] is None
                assert re.findall(axis, p["day"])[-2:] == ["29 Nov 00:50", "30 Nov 00:50"]
                assert re.findall(axis, p["hour"])[-1] == ("01:04" if at > later else "01:03")
        task = refresh()
        await asyncio.sleep(0.05)
        assert len(days_asked) == queries  # once each, not once per view
        assert refresh() is task and not task.done()

        # It fails: logged; the views still show the previous charts, and try again.
        held.set()
        await task
        assert not overview.DAY_REFRESHES
        assert [r.getMessage() for r in caplog.records if "background" in r.getMessage()] == [
            f"overview: {charts} of {charts} day charts failed in the background "
            "(tried again at the next view)"
        ]
        failing = False
        context = await view(later + 120)
        assert all("30 Nov 00:50" in p["day"] for p in context["panels"])
        await refresh()
        assert len(days_asked) == 2 * queries

        # Refreshed: the new day charts, and no day request more.
        asked = len(days_asked)
        context = await view(later + 180)
        assert len(days_asked) == asked
        for p in context["panels"]:
            assert p["error"] is None
            assert re.findall(axis, p["day"])[-2:] == ["29 Nov 01:00", "30 Nov 01:00"]
        assert panel(context, "ingest")["headline"] == "78 records/s"

    asyncio.run(views())
