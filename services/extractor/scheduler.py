"""The scheduler: runs each due integration, one run at a time per integration.

Every ``tick_s`` it closes runs whose extractor died (their lock is free), then starts the due
integrations (schedule, retry or ``skein integrations run``) up to ``max_concurrent_runs``,
each on its own thread with its own control-DB connection that holds the integration's
advisory lock for the whole run. Several extractors may share one control DB: the lock keeps
an integration's runs one at a time across all of them.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg2

from common import control, crypto, db
from services.extractor import locks, metrics, runs, sandbox, schedule, taps
from services.extractor.redact import Redactor, secret_values
from services.extractor.run import RunOutcome, RunRequest, execute
from services.extractor.settings import ExtractorSettings

log = logging.getLogger("skein.extractor")


def owner_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Scheduler:
    def __init__(
        self,
        settings: ExtractorSettings,
        connect: Callable[[], control.Connection] | None = None,
    ) -> None:
        self.settings = settings
        # Refuses to start when the sandbox asked for cannot be had (SandboxError).
        self.sandbox = sandbox.choose(settings.sandbox, settings.tap_user)
        self.policy = settings.install_policy()
        self.stop = threading.Event()
        self._connect = connect or (lambda: db.connect(settings.control_dsn.get_secret_value()))
        self._running: dict[int, threading.Thread] = {}
        # Each run's cancel: set when the extractor stops, or a stop is asked for that run.
        self._cancels: dict[int, threading.Event] = {}
        self._lock = threading.Lock()
        self._owner = owner_name()
        self._secret_key = settings.secret_key.get_secret_value()

    # --- the loop ----------------------------------------------------------------------------

    def serve(self) -> None:
        """Tick until :attr:`stop` is set, then let the runs in progress end (cancelled)."""
        conn: control.Connection | None = None
        while not self.stop.is_set():
            try:
                if conn is None or conn.closed:
                    conn = self._connect()
                self.tick(conn)
            except psycopg2.Error as exc:
                log.warning("control database unavailable", extra={"error": str(exc)})
                if conn is not None:
                    conn.close()
                conn = None
            self.stop.wait(self.settings.tick_s)
        if conn is not None:
            conn.close()
        with self._lock:
            for cancel in self._cancels.values():
                cancel.set()
        self.wait_runs(self.settings.shutdown_timeout_s)

    def run_due_once(self) -> None:
        """Start every due integration, wait for their runs to end (``--once``)."""
        with closing(self._connect()) as conn:
            self.tick(conn)
        self.wait_runs(None)

    def wait_runs(self, timeout_s: float | None) -> None:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        for thread in list(self._running.values()):
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def tick(self, conn: control.Connection) -> None:
        busy = self.reap(conn)
        for integration_id in runs.stop_requested(conn) & busy:
            with self._lock:
                cancel = self._cancels.get(integration_id)
            if cancel is not None and not cancel.is_set():
                log.info("stopping a run on request", extra={"integration_id": integration_id})
                cancel.set()
        room = self.settings.max_concurrent_runs - len(busy)
        if room <= 0:
            return
        for integration_id in runs.due(conn, room + len(busy)):
            if integration_id in busy or room <= 0:
                continue
            run_conn = self._connect()
            if not locks.try_lock(run_conn, integration_id):
                run_conn.close()  # running in another extractor
                continue
            thread = threading.Thread(
                target=self.run_locked,
                args=(run_conn, integration_id),
                name=f"run-{integration_id}",
                daemon=True,
            )
            with self._lock:
                self._running[integration_id] = thread
                self._cancels[integration_id] = threading.Event()
            thread.start()
            room -= 1

    def reap(self, conn: control.Connection) -> set[int]:
        """Close the runs whose extractor died; return the integrations running here."""
        with self._lock:
            self._running = {i: t for i, t in self._running.items() if t.is_alive()}
            self._cancels = {i: c for i, c in self._cancels.items() if i in self._running}
            busy = set(self._running)
        for integration_id in runs.with_running_rows(conn):
            if integration_id not in busy:
                self._close_dead_runs(conn, integration_id)
        return busy

    def _close_dead_runs(self, conn: control.Connection, integration_id: int) -> None:
        if not locks.try_lock(conn, integration_id):
            return  # alive in another extractor
        try:
            closed = runs.close_dead_runs(conn, integration_id)
            found = runs.failure_count(conn, integration_id)
            if closed and found is not None:
                expression, failures = found
                runs.record_dead_runs(
                    conn,
                    integration_id,
                    self._after_failure(expression, failures + 1),
                )
                log.warning(
                    "closed a run whose extractor died", extra={"integration_id": integration_id}
                )
        finally:
            locks.unlock(conn, integration_id)

    def _cancel_of(self, integration_id: int) -> threading.Event:
        """The run's own cancel (``run_due_once`` runs have none registered: the extractor's)."""
        with self._lock:
            return self._cancels.get(integration_id) or self.stop

    def _after_failure(self, expression: str, failures: int) -> datetime:
        return schedule.after_failure(
            expression,
            datetime.now(UTC),
            failures,
            self.settings.retry_base_s,
            self.settings.retry_cap_s,
        )

    # --- one run -----------------------------------------------------------------------------

    def run_locked(self, conn: control.Connection, integration_id: int) -> None:
        try:
            with closing(conn):
                if runs.close_dead_runs(conn, integration_id):
                    found = runs.failure_count(conn, integration_id)
                    if found is not None:
                        runs.record_dead_runs(
                            conn, integration_id, self._after_failure(found[0], found[1] + 1)
                        )
                try:
                    spec = runs.load(conn, self._secret_key, integration_id)
                except crypto.SecretKeyError as exc:
                    self._refuse(conn, integration_id, str(exc))
                    return
                if spec is not None:
                    self._run(conn, spec)
        except Exception:
            log.exception("run failed to start or finish", extra={"integration_id": integration_id})

    def _refuse(self, conn: control.Connection, integration_id: int, error: str) -> None:
        """A run that cannot even start (its config cannot be decrypted): recorded as failed,
        so operators see why in its history, and retried with back-off."""
        found = runs.failure_count(conn, integration_id)
        if found is None:
            return
        run_id = runs.start_run(conn, integration_id, "schedule", self._owner)
        runs.finish_run(
            conn,
            run_id,
            succeeded=False,
            records={},
            error=error,
            stderr="",
            next_run_at=self._after_failure(found[0], found[1] + 1),
        )
        log.error("run refused", extra={"integration_id": integration_id, "error": error})

    def _run(self, conn: control.Connection, spec: runs.RunSpec) -> None:
        labels = (str(spec.client_id), spec.name)
        trigger = "manual" if spec.manual else "retry" if spec.consecutive_failures else "schedule"
        run_id = runs.start_run(conn, spec.integration_id, trigger, self._owner)
        log.info(
            "run started",
            extra={"integration": spec.name, "run_id": run_id, "trigger": trigger},
        )
        started = time.monotonic()
        metrics.RUNNING.labels(*labels).inc()
        redactor = Redactor([*secret_values(spec.config, spec.secret_keys), spec.token])
        try:
            outcome = self._execute(conn, spec, run_id, redactor, labels)
        except Exception as exc:
            outcome = RunOutcome(False, {}, redactor(f"{type(exc).__name__}: {exc}"), "")
        finally:
            metrics.RUNNING.labels(*labels).dec()
        status = "succeeded" if outcome.succeeded else "failed"
        now = datetime.now(UTC)
        # Stopped on request (not by the extractor stopping): no failure to retry, the next run
        # comes on schedule (from the saved state).
        stopped = self._cancel_of(spec.integration_id).is_set() and not self.stop.is_set()
        next_run_at = (
            schedule.next_run(spec.schedule, now)
            if outcome.succeeded or stopped
            else self._after_failure(spec.schedule, spec.consecutive_failures + 1)
        )
        runs.finish_run(
            conn,
            run_id,
            succeeded=outcome.succeeded,
            records=outcome.records,
            error=outcome.error,
            stderr=outcome.stderr,
            next_run_at=next_run_at,
            counts_as_failure=not stopped,
        )
        took = time.monotonic() - started
        metrics.RUNS.labels(*labels, status).inc()
        metrics.DURATION.labels(spec.name, status).observe(took)
        log.info(
            "run ended",
            extra={
                "integration": spec.name,
                "run_id": run_id,
                "status": status,
                "records": outcome.records,
                "error": outcome.error,
                "duration_s": round(took, 3),
                "next_run_at": next_run_at.isoformat(),
            },
        )

    def _execute(
        self,
        conn: control.Connection,
        spec: runs.RunSpec,
        run_id: int,
        redactor: Redactor,
        labels: tuple[str, str],
    ) -> RunOutcome:
        root = Path(self.settings.taps_dir)
        self.policy.check(spec.tap_package)  # the allowed taps may have changed since its add
        tap = taps.installed(root, spec.tap_package, spec.tap_version, spec.tap_executable)
        if tap is None:  # a new machine or container: install it (cached from now on)
            try:
                tap = taps.install(
                    root,
                    taps.TapSpec(spec.tap_package, spec.tap_version),
                    self.settings.install_timeout_s,
                    self.policy,
                    self.sandbox,
                )
                metrics.TAP_INSTALLS.labels("ok").inc()
            except taps.TapError:
                metrics.TAP_INSTALLS.labels("failed").inc()
                raise

        def save_state(state: Any, records: dict[str, int]) -> None:
            runs.save_state(conn, spec.integration_id, run_id, state, records)
            metrics.STATES_SAVED.labels(*labels).inc()

        s = self.settings
        request = RunRequest(
            executable=tap.executable,
            config=spec.config,
            catalog=spec.catalog,
            state=spec.state,
            target_config={
                "gate_url": s.gate_url,
                "token": spec.token,
                "batch_records": s.batch_records,
                "batch_bytes": s.batch_bytes,
                "flush_interval_s": s.flush_interval_s,
                "gate_retry_window_s": s.gate_retry_window_s,
                "gate_timeout_s": s.gate_timeout_s,
                "reset_version": spec.reset_version,
                "reset_streams": None if spec.reset_streams is None else list(spec.reset_streams),
            },
            timeout_s=s.run_timeout_s,
            redactor=redactor,
            stderr_limit_bytes=s.stderr_limit_bytes,
            save_state=save_state,
            on_records=lambda n: metrics.RECORDS.labels(*labels).inc(max(0, n)),
            cancel=self._cancel_of(spec.integration_id),
            sandbox=self.sandbox,
        )
        return execute(request)
