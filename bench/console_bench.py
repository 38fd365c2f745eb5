"""Server time of every web console page (issue 19: p99 <= 150 ms with 1,000 clients x 20
tables in the control database), over ``control_bench``'s seeded database and control process.

    .venv/bin/python bench/console_bench.py [control_bench's flags] [--console-requests 100]
                                            [--console-warmup 10]

``bench/control_bench.py`` runs this after its API endpoints, on the same database and
process (``--console-requests 0`` leaves it out); run alone, this seeds the same database and
times the console only.

1. Two console users in the bench database (``services.control.users.create``): an operator,
   and a user of one client, the client with the most batches (the worst case of a client's
   pages); each logs in as a browser does (``GET /`` for the login form's CSRF token and
   cookie, ``POST /login``, the ``skein_session`` cookie).
2. After a warm-up, ``--console-requests`` requests of every page of ``PAGES``: the
   operator's with a random client per request (one with an integration for the integration
   pages, and a random run of it), the client user's of its own client; every page's requests
   interleaved in a shuffled order, sequentially on one connection. The overview asks the
   stack's Prometheus (``--prometheus-url``), as it does in the stack.

3. The overview's Prometheus part in this process (``overview.gather``), with its day charts
   cached and not (a worker's first overview of each 10-min step asks for a day of every
   panel), and the operator's against made-up answers with as many clients' ingest series as
   the database has clients (the stack's Prometheus holds a handful).

Prints p50 / p99 / max per page against the target (p99 <= 150 ms), with ``GET /healthz`` (no
session, no database) as the baseline. The figure is the client's round trip on loopback: an
upper bound of the server's time (it adds the HTTP client and loopback, about the baseline).
With 100 requests a page, p99 is the slowest of them.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import secrets
import time
from contextlib import closing
from dataclasses import dataclass

import httpx
import orjson
import psycopg2
from control_bench import Samples, bench_database, control_service, load_average, parser
from control_bench import percentile as pct

from services.control import users
from services.control.console import overview
from services.control.settings import ControlSettings

TARGET_P99_MS = 150.0
LOGIN_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
SESSION_COOKIE = "skein_session"


@dataclass(frozen=True)
class Page:
    """A console page to time: ``template`` formatted with ``{client_id}``, ``{after}``,
    ``{name}`` (the client's integration) and ``{run_id}`` (one of its runs)."""

    template: str
    user: str = "operator"  # "operator", "client" (the client user, its own client) or ""
    integrated: bool = False  # needs a client with an integration

    @property
    def name(self) -> str:
        if not self.user:
            return f"GET {self.template} (baseline: no session, no database)"
        shown = self.template.replace("{after}", "<random>")
        return f"GET {shown} ({self.user})"


PAGES = [
    Page("/"),  # the overview: Prometheus's HTTP API, every client
    Page("/clients"),
    Page("/clients?after={after}"),
    Page("/clients/{client_id}"),
    Page("/clients/{client_id}/tables"),
    Page("/clients/{client_id}/destination"),
    Page("/clients/{client_id}/access"),
    Page("/clients/{client_id}/integrations", integrated=True),
    Page("/clients/{client_id}/integrations/{name}", integrated=True),
    Page("/clients/{client_id}/integrations/{name}/runs/{run_id}", integrated=True),
    Page("/", user="client"),  # its own client's figures and alerts only
    Page("/clients/{client_id}", user="client"),
    Page("/clients/{client_id}/tables", user="client"),
    Page("/clients/{client_id}/integrations/{name}", user="client", integrated=True),
]
BASELINE = Page("/healthz", user="")


@dataclass(frozen=True)
class Fleet:
    """What requests pick from: the seeded clients and their integrations' runs."""

    clients: list[int]
    runs: dict[int, tuple[str, list[int]]]  # client id: (its integration, its run ids)
    own: int  # the client user's client
    own_batches: int

    def path(self, page: Page, rng: random.Random) -> str:
        if page.user == "client":
            client = self.own
        elif page.integrated:
            client = rng.choice(sorted(self.runs))
        else:
            client = rng.choice(self.clients)
        name, runs = self.runs.get(client, ("", [0]))
        return page.template.format(
            client_id=client,
            after=rng.randint(0, self.clients[-1]),
            name=name,
            run_id=rng.choice(runs),
        )


def fleet(conn: psycopg2.extensions.connection) -> Fleet:
    with conn, conn.cursor() as cur:
        cur.execute("SELECT client_id FROM clients ORDER BY client_id")
        clients = [int(r[0]) for r in cur.fetchall()]
        cur.execute(
            """SELECT i.client_id, i.name, array_agg(r.run_id ORDER BY r.run_id)
               FROM integrations i JOIN integration_runs r USING (integration_id)
               GROUP BY i.client_id, i.name"""
        )
        runs = {int(c): (str(n), [int(r) for r in ids]) for c, n, ids in cur.fetchall()}
        cur.execute(
            "SELECT client_id, count(*) FROM batches GROUP BY client_id"
            " ORDER BY count(*) DESC, client_id LIMIT 1"
        )
        own, own_batches = cur.fetchone()  # type: ignore[misc]
    return Fleet(clients, runs, int(own), int(own_batches))


def log_in(url: str, name: str, password: str) -> str:
    """As a browser does: the login form's CSRF token and cookie, then the session cookie."""
    with httpx.Client(base_url=url, timeout=60) as http:
        form = http.get("/")
        found = LOGIN_CSRF.search(form.text)
        if form.status_code != 200 or found is None:
            raise SystemExit(f"no login form at /: {form.status_code} {form.text[:300]}")
        answer = http.post(
            "/login", data={"name": name, "password": password, "csrf": found.group(1)}
        )
        session = answer.cookies.get(SESSION_COOKIE)
        if answer.status_code != 303 or not session:
            raise SystemExit(f"login of {name} failed: {answer.status_code} {answer.text[:300]}")
        return str(session)


def run_plan(
    http: httpx.Client, sessions: dict[str, str], plan: list[tuple[Page, str]]
) -> tuple[dict[str, Samples], httpx.Client]:
    """The plan's requests in order on ``http``'s connection, each with its user's session
    cookie; an answer that is the login form (a lost session) counts as an error. The samples
    per page, and the client to go on with (a new one after a failure closed the old)."""
    results = {p.name: Samples() for p, _ in plan}
    for page, path in plan:
        http.cookies.clear()  # only the session cookie given: none the answers set
        headers = {"Cookie": f"{SESSION_COOKIE}={sessions[page.user]}"} if page.user else {}
        began = time.perf_counter()
        try:
            response: httpx.Response | httpx.TransportError = http.get(path, headers=headers)
        except httpx.TransportError as e:
            response = e
        elapsed = (time.perf_counter() - began) * 1000
        samples = results[page.name]
        samples.add(elapsed, response)
        if isinstance(response, httpx.TransportError) or response.status_code >= 500:
            http.close()  # uvicorn closes the connection after an unhandled error
            http = httpx.Client(base_url=str(http.base_url), timeout=60)
        elif response.status_code == 200 and 'name="password"' in response.text:
            samples.failed(f"{path}: the login form (no session)")
    return results, http


def schedule(fleet: Fleet, pages: list[Page], n: int, rng: random.Random) -> list[tuple[Page, str]]:
    plan = [(p, fleet.path(p, rng)) for p in pages for _ in range(n)]
    rng.shuffle(plan)
    return plan


def print_table(results: dict[str, Samples], pages: list[Page]) -> None:
    width = max(len(p.name) for p in pages)
    print(f"  {'page':<{width}}  requests  p50 ms  p99 ms  max ms  KB/answer  result")
    for p in pages:
        s = results[p.name]
        if not s.ms:
            continue
        p99 = pct(s.ms, 99)
        verdict = ""
        if s.errors:
            verdict = f"ERROR x{s.errors}: {s.first_error}"
        elif p is not BASELINE:
            verdict = "PASS" if p99 <= TARGET_P99_MS else "FAIL"
        print(
            f"  {p.name:<{width}}  {len(s.ms):>8}  {pct(s.ms, 50):>6.1f}  {p99:>6.1f}"
            f"  {max(s.ms):>6.1f}  {s.bytes / len(s.ms) / 1024:>9.1f}  {verdict}"
        )


def measure_console(url: str, dsn: str, args: argparse.Namespace) -> None:
    """Create the two users, log them in, and time every page."""
    password = secrets.token_urlsafe(24)
    with closing(psycopg2.connect(dsn)) as conn:
        found = fleet(conn)
        users.create(conn, "bench-operator", None, password)
        users.create(conn, "bench-client", found.own, password)
    sessions = {
        "operator": log_in(url, "bench-operator", password),
        "client": log_in(url, "bench-client", password),
    }
    pages = [p for p in PAGES if p.user != "client" or not p.integrated or found.own in found.runs]
    timed = [BASELINE, *pages]
    rng = random.Random(args.seed)
    # The warm-up on the same connection as the timed requests: a connection stays with one
    # worker process, and a process's first answers pay once for what it caches (templates
    # compiled, the TLS context, the overview's day charts).
    http = httpx.Client(base_url=url, timeout=60)
    try:
        _, http = run_plan(http, sessions, schedule(found, timed, args.console_warmup, rng))
        plan = schedule(found, timed, args.console_requests, rng)
        results, http = run_plan(http, sessions, plan)
    finally:
        http.close()
    overview_errors = 0  # answers with a panel Prometheus could not fill
    print(
        f"console pages, sequential, one connection ({args.console_requests} requests per page "
        f"after {args.console_warmup} warm-up, interleaved; operator: a random client per "
        f"request; client user: client {found.own}, the one with the most batches, "
        f"{found.own_batches:,}; target p99 <= {TARGET_P99_MS:g} ms):"
    )
    print(
        "  (time: the client's round trip on loopback, an upper bound of the server's time; "
        "the baseline is what the round trip alone costs)"
    )
    print_table(results, timed)
    judged = [results[p.name] for p in pages]
    passed = sum(1 for s in judged if not s.errors and pct(s.ms, 99) <= TARGET_P99_MS)
    print(f"  {passed}/{len(judged)} console pages within the target")
    with httpx.Client(base_url=url, timeout=60) as http:
        for user in ("operator", "client"):
            answer = http.get("/", headers={"Cookie": f"{SESSION_COOKIE}={sessions[user]}"})
            overview_errors += answer.text.count('class="error"')
    if overview_errors:
        print(
            f"  note: {overview_errors} overview panel(s) without figures from "
            f"{args.prometheus_url} (the page renders without them)"
        )
    overview_parts(args.prometheus_url, found.own, len(found.clients), 10)


def synthetic_prometheus(clients: int) -> httpx.MockTransport:
    """A Prometheus whose answers are made up: ``clients`` series for a query by client, three
    for any other; each answer made once per shape, so only the console's side is timed."""
    made: dict[tuple[bool, int], bytes] = {}

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/alerts"):
            return httpx.Response(200, json={"status": "success", "data": {"alerts": []}})
        q = request.url.params
        start, end, step = float(q["start"]), float(q["end"]), float(q["step"])
        by_client, points = "by (client_id)" in q["query"], int((end - start) // step) + 1
        if (by_client, points) not in made:
            result = [
                {
                    "metric": {"client_id": str(i)} if by_client else {"result": f"r{i}"},
                    "values": [
                        [start + k * step, f"{(i * 7 + k) % 50 + 0.5}"] for k in range(points)
                    ],
                }
                for i in range(clients if by_client else 3)
            ]
            data = {"resultType": "matrix", "result": result}
            made[by_client, points] = orjson.dumps({"status": "success", "data": data})
        return httpx.Response(
            200, content=made[by_client, points], headers={"content-type": "application/json"}
        )

    return httpx.MockTransport(answer)


def overview_parts(prometheus_url: str, own: int, clients: int, n: int) -> None:
    """The overview's Prometheus part (``overview.gather``) in this process, with its day
    charts cached and not: a worker's first overview of each 10-min step (per client filter)
    asks Prometheus for a day of every panel, which the timed pages above (a few minutes, one
    worker) meet at most once. Then the operator's with ``clients`` clients' ingest series,
    which the stack's Prometheus does not hold."""
    settings = ControlSettings(prometheus_url=prometheus_url)
    synthetic = synthetic_prometheus(clients)
    ingest = overview.PANELS[0].queries[0].expr

    async def timed(
        client_id: int | None, cold: bool, transport: httpx.AsyncBaseTransport | None = None
    ) -> str:
        found = []
        for _ in range(n):
            if cold:
                overview.DAY_CACHE.clear()
            began = time.perf_counter()
            await overview.gather(settings, client_id=client_id, transport=transport)
            found.append((time.perf_counter() - began) * 1000)
        return f"p50 {pct(found, 50):.0f} max {max(found):.0f} ms"

    async def run() -> list[str]:
        await overview.gather(settings)  # the TLS context and imports, once
        async with httpx.AsyncClient(base_url=prometheus_url, timeout=10) as http:
            now = time.time()
            series = await overview.query_range(
                http, overview.promql(ingest, None), now - 3600, now, 30
            )
        lines = [f"  the stack's Prometheus holds {len(series)} clients' ingest series this hour"]
        for who, client_id in (("operator", None), (f"client {own}", own)):
            lines.append(
                f"  {who}: day charts cached {await timed(client_id, False)}; "
                f"not cached {await timed(client_id, True)}"
            )
        warm = await timed(None, False, synthetic)
        cold = await timed(None, True, synthetic)
        lines.append(
            f"  operator, {clients:,} clients' series (answers made up in this process, "
            f"Prometheus's own time not counted): day charts cached {warm}; not cached {cold}"
        )
        overview.DAY_CACHE.clear()
        return lines

    print(
        f"the overview's Prometheus part alone (overview.gather in this process, {n} each, "
        "not a round trip; not cached: a worker's first overview of each 10-min step):"
    )
    for line in asyncio.run(run()):
        print(line)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--console-requests", type=int, default=100, help="timed requests per console page; 0: none"
    )
    parser.add_argument(
        "--console-warmup", type=int, default=10, help="untimed requests per console page"
    )


def main() -> None:
    arguments = parser()
    add_arguments(arguments)
    args = arguments.parse_args()
    with (
        bench_database(arguments, args) as db,
        control_service(db.dsn, args.workers, args.prometheus_url) as url,
    ):
        print(f"control service: {url}, {args.workers} workers; load average {load_average()}")
        measure_console(url, db.dsn, args)
        print(f"load average at the end: {load_average()} (1/5/15 min)")


if __name__ == "__main__":
    main()
