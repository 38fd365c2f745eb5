"""The web console in a real browser (Debian's chromium, driven by Playwright), against the
local stack: an operator logs in, creates a client, gives it the demo warehouse as its
destination and a token; records pushed with that token appear as a table with its freshness;
a dead batch is retried from the page and its row lands; a client's user cannot reach another
client's pages. A screenshot of each page is kept in ``.run/screenshots/``."""

from __future__ import annotations

import re
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from common import db
from common.settings import SharedSettings
from services.control import destinations
from support.cli import ok
from support.stack import RUN_DIR, demo_warehouse_secrets, wait_for
from support.tenants import Tenant, batches_of, drop_schemas, push, rows
from support.warehouse import DEMO_WAREHOUSE, warehouse_role

pytestmark = pytest.mark.e2e

CONSOLE = "http://127.0.0.1:8082"
SHOTS = RUN_DIR / "screenshots"
PASSWORD = "console-e2e-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is needed (make up installs it)"
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield launched
        launched.close()


def user(name: str, *role: str) -> str:
    ok("users", "create", name, *role, "--password-env", "CONSOLE_PW", env={"CONSOLE_PW": PASSWORD})
    return name


def log_in(browser: Browser, name: str, width: int = 1280) -> Page:
    """A new browser session, logged in with the keyboard only."""
    page = browser.new_context(viewport={"width": width, "height": 900}).new_page()
    page.goto(CONSOLE + "/")
    expect(page.get_by_role("heading", name="Log in to Skein")).to_be_visible()
    page.keyboard.type(name)  # the name field has the focus
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    return page


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def usable(page: Page, width: int) -> None:
    """Every visible field has a label, and nothing is wider than the window."""
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('input, select, textarea')]
             .filter(e => e.type !== 'hidden' && e.labels.length === 0
                          && !e.getAttribute('aria-label'))
             .map(e => e.name || e.id)"""
    )
    assert unlabelled == [], f"fields without a label on {page.url}: {unlabelled}"
    assert page.evaluate("document.documentElement.scrollWidth") <= width, page.url


def test_an_operator_runs_a_client_from_the_browser_and_a_client_user_sees_only_its_own(
    browser: Browser,
) -> None:
    suffix = uuid.uuid4().hex[:8]
    operator = log_in(browser, user(f"op-{suffix}", "--operator"))
    shot(operator, "overview")
    usable(operator, 1280)

    # a client, created from the clients page
    operator.get_by_role("link", name="Clients").click()
    operator.get_by_label("Name").fill(f"console {suffix}")
    operator.get_by_role("button", name="Create client").click()
    heading = operator.get_by_role("heading", level=1)
    expect(heading).to_contain_text(f"console {suffix}")
    client_id = int(re.search(r"/clients/(\d+)", operator.url).group(1))  # type: ignore[union-attr]
    schema = f"console_{suffix}"

    # its destination: the demo warehouse, as a role of its own; a bad value is refused in place
    operator.get_by_role("link", name="Destination").click()
    operator.get_by_role("textbox", name=re.compile("^Connection")).fill("port=5433")
    operator.get_by_role("button", name="Save destination").click()
    expect(operator.locator("#e-dsn")).to_contain_text("host")
    role_password = "wh-" + uuid.uuid4().hex
    role = warehouse_role(role_password)
    dsn = f"host=127.0.0.1 port=5433 dbname=warehouse user={role}"
    operator.get_by_role("textbox", name=re.compile("^Connection")).fill(dsn)
    operator.get_by_label("Schema").fill(schema)
    operator.get_by_label(re.compile("^Password")).fill(role_password)
    operator.get_by_role("button", name="Save destination").click()
    expect(operator.get_by_role("status").first).to_contain_text("Destination saved")
    operator.get_by_role("button", name="Test connection").click()
    expect(operator.locator("#test-result")).to_contain_text("Connected")
    assert role_password not in operator.content()  # written, never read back
    shot(operator, "destination")
    usable(operator, 1280)

    # a token, shown once
    operator.get_by_role("link", name="Tokens and webhooks").click()
    operator.get_by_role("button", name="Create token").click()
    token = operator.locator("#new-secret").input_value()
    assert token
    shot(operator, "tokens")
    operator.reload()  # a POST again would make another; the page itself never shows it again
    operator.goto(f"{CONSOLE}/clients/{client_id}/access")
    assert token not in operator.content()

    # records through the gate with that token: the table appears with its freshness
    tenant = Tenant(client_id, token, schema, dict(DEMO_WAREHOUSE))
    push(tenant, "orders", [{"id": i, "amount": i * 1.5} for i in range(1, 6)])
    operator.get_by_role("link", name="Tables").click()
    card = operator.locator('article[data-table="orders"]')
    expect(card.locator(".freshness")).to_contain_text(" s", timeout=60_000)
    expect(card.locator(".rows-loaded")).to_have_text("5")
    assert rows(tenant, "orders") == [(i,) for i in range(1, 6)]
    shot(operator, "client")
    usable(operator, 1280)

    # a dead batch: the destination is re-pointed (as a DNS change would) where the loader's
    # network policy refuses it; the batch parks dead; fixed, it is retried from the page
    with closing(db.connect()) as conn:
        destinations.set_destination(
            conn,
            SharedSettings().secret_key.get_secret_value(),
            client_id,
            "postgres",
            {"dsn_params": {"host": "127.0.0.1", "port": "5432", "dbname": "skein"}},
            demo_warehouse_secrets({"port": "5432"}),
        )
    push(tenant, "orders", [{"id": 6, "amount": 9.0}], first_seq=6)
    dead = wait_for(
        lambda: [b for b in batches_of([client_id]) if b["state"] == "dead"],
        timeout=120,
        what="the batch parked by the network policy",
    )
    operator.reload()
    retry = operator.get_by_role("button", name=f"Retry batch {dead[0]['batch_id']}")
    expect(retry).to_be_visible()
    shot(operator, "dead-batch")
    operator.get_by_role("link", name="Destination").click()
    operator.get_by_role("textbox", name=re.compile("^Connection")).fill(dsn)
    operator.get_by_label("Schema").fill(schema)
    operator.get_by_label(re.compile("^Password")).fill(role_password)
    operator.get_by_role("button", name="Save destination").click()
    expect(operator.get_by_role("status").first).to_contain_text("Destination saved")
    operator.get_by_role("link", name="Tables").click()
    operator.get_by_role("button", name=f"Retry batch {dead[0]['batch_id']}").focus()
    operator.keyboard.press("Enter")  # by keyboard
    expect(operator.get_by_text(f"Batch {dead[0]['batch_id']} retried.")).to_be_visible()
    wait_for(
        lambda: rows(tenant, "orders") == [(i,) for i in range(1, 7)] or None,
        timeout=120,
        what="the retried batch's row",
    )

    # integrations and the narrow screen
    operator.get_by_role("link", name="Integrations").click()
    expect(operator.get_by_role("heading", name="Add a tap")).to_be_visible()
    shot(operator, "integrations")
    usable(operator, 1280)
    narrow = log_in(browser, f"op-{suffix}", width=390)
    for path, name in (
        ("/", "overview-390"),
        ("/clients", "clients-390"),
        (f"/clients/{client_id}", "client-390"),
        (f"/clients/{client_id}/destination", "destination-390"),
        (f"/clients/{client_id}/access", "tokens-390"),
        (f"/clients/{client_id}/integrations", "integrations-390"),
    ):
        narrow.goto(CONSOLE + path)
        shot(narrow, name)
        usable(narrow, 390)

    # a client's user: its own client only; every other client's page and action is a 404
    other = ok("clients", "create", f"console other {suffix}")["client_id"]
    mine = log_in(browser, user(f"cl-{suffix}", "--client", str(client_id)))
    expect(mine.get_by_role("link", name="Clients")).to_have_count(0)
    mine.goto(f"{CONSOLE}/clients")
    assert mine.url.endswith(f"/clients/{client_id}")
    for path in (
        f"/clients/{other}",
        f"/clients/{other}/destination",
        f"/clients/{other}/access",
        f"/clients/{other}/integrations",
    ):
        answer = mine.goto(CONSOLE + path)
        assert answer is not None and answer.status == 404, path
    csrf = _csrf(mine)
    for path in (f"/clients/{other}/tokens", f"/clients/{other}/batches/1/retry", "/clients"):
        posted = mine.request.post(CONSOLE + path, form={"csrf": csrf, "name": "x"})
        assert posted.status == 404, path
    shot(mine, "client-user")
    drop_schemas([tenant])


def _csrf(page: Page) -> str:
    found: Any = page.evaluate("document.querySelector('input[name=csrf]').value")
    return str(found)


def test_logins_are_limited_and_forms_need_their_token(browser: Browser) -> None:
    """Wrong passwords count per user name: past the limit even the right one is refused
    (429); a change without the session's CSRF token is refused (403) and changes nothing."""
    name = user(f"lim-{uuid.uuid4().hex[:8]}", "--operator")
    with httpx.Client(base_url=CONSOLE) as http:
        for _ in range(5):
            form = http.get("/")
            token = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
            r = http.post("/login", data={"name": name, "password": "wrong" * 4, "csrf": token})
            assert r.status_code == 401
            assert "Wrong user name or password" in r.text
        token = re.search(r'name="csrf" value="([^"]+)"', http.get("/").text).group(1)  # type: ignore[union-attr]
        r = http.post("/login", data={"name": name, "password": PASSWORD, "csrf": token})
        assert r.status_code == 429
        assert "Too many failed logins" in r.text
    page = browser.new_context().new_page()
    page.goto(CONSOLE + "/")
    cookies = page.context.cookies()
    assert all(c["name"] != "skein_session" for c in cookies)
    before = time.time()
    other = log_in(browser, user(f"csrf-{uuid.uuid4().hex[:8]}", "--operator"))
    session = next(c for c in other.context.cookies() if c["name"] == "skein_session")
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    forged = other.request.post(CONSOLE + "/clients", form={"name": f"forged {before}"})
    assert forged.status == 403
    assert not [c for c in ok("clients", "list")["clients"] if c["name"] == f"forged {before}"]
