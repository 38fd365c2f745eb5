"""Schemas compile in a worker process with time and memory caps, under a per-client budget."""

from __future__ import annotations

import pytest

from services.gate.compiler import CompileBudget, CompileWorker
from services.gate.errors import ApiError
from services.gate.schemas import (
    Compiled,
    SchemaRejected,
    compile_timed,
    load_validator,
    validate,
)

SMALL = {"type": "object", "properties": {"id": {"type": "integer"}, "s": {"pattern": "^a+$"}}}


def big_schema(n: int) -> dict[str, object]:
    return {
        "type": "object",
        "properties": {
            f"p{i}": {"type": "object", "properties": {"a": {"type": "string", "maxLength": i}}}
            for i in range(n)
        },
    }


@pytest.fixture(scope="module")
def worker() -> CompileWorker:
    w = CompileWorker(timeout_s=20, memory_bytes=1 << 30)
    yield w  # type: ignore[misc]
    w.close()


def test_the_worker_compiles_a_validator_the_gate_process_runs(worker: CompileWorker) -> None:
    check = load_validator(worker.compile(SMALL).blob)
    validate(check, {"id": 1, "s": "aaa"})
    with pytest.raises(ValueError, match="must be integer"):
        validate(check, {"id": "x"})


def test_a_schema_the_worker_refuses_is_a_schema_error(worker: CompileWorker) -> None:
    with pytest.raises(SchemaRejected, match="RE2"):
        worker.compile({"properties": {"s": {"pattern": "(a)\\1"}}})
    with pytest.raises(SchemaRejected, match="remote"):
        worker.compile({"properties": {"s": {"$ref": "http://example.com/s.json"}}})
    assert load_validator(worker.compile(SMALL).blob)  # the worker lives on


def test_a_compile_past_the_time_cap_kills_the_worker_and_a_new_one_takes_over() -> None:
    slow = CompileWorker(timeout_s=0.05, memory_bytes=1 << 30)
    try:
        with pytest.raises(SchemaRejected, match=r"longer than 0\.05 s") as refused:
            slow.compile(big_schema(4000))
        assert refused.value.cpu_s == 0.05  # the cap is what the client is charged
        slow._timeout_s = 20
        assert load_validator(slow.compile(SMALL).blob)
    finally:
        slow.close()


def test_a_compile_past_the_memory_cap_is_refused() -> None:
    tight = CompileWorker(timeout_s=60, memory_bytes=200 << 20)
    try:
        with pytest.raises(SchemaRejected):
            tight.compile(big_schema(20000))
        assert load_validator(tight.compile(SMALL).blob)
    finally:
        tight.close()


def test_the_budget_refuses_a_client_that_compiles_too_much_or_keeps_failing() -> None:
    budget = CompileBudget(seconds=1.0, failures=3)
    for _ in range(3):
        budget.check(7)
        budget.finish(7, 0.01, failed=True)
    with pytest.raises(ApiError) as refused:
        budget.check(7)
    assert refused.value.status == 429 and refused.value.body["limit"] == "schema_compiles"
    budget.check(8)  # another client is not affected
    budget.finish(8, 1.5, failed=False)
    with pytest.raises(ApiError, match=r"took 1\.5 CPU seconds"):
        budget.check(8)


def test_requests_with_the_same_new_schema_share_one_compile() -> None:
    import asyncio

    from services.gate.schemas import SchemaCache

    calls = []

    def slow_compile(schema: dict[str, object]) -> Compiled:
        import time

        calls.append(1)
        time.sleep(0.2)
        return compile_timed(schema)

    async def burst() -> list[object]:
        cache = SchemaCache(8, 1 << 20, slow_compile, CompileBudget(10, 10))
        return await asyncio.gather(*(cache.prepare(7, SMALL) for _ in range(6)))

    got = asyncio.run(burst())
    assert len(calls) == 1 and all(v is got[0] for v in got)


def test_the_worker_compiles_at_the_lowest_priority(worker: CompileWorker) -> None:
    import os

    assert load_validator(worker.compile(SMALL).blob)
    assert worker._process is not None
    assert os.getpriority(os.PRIO_PROCESS, worker._process.pid) == 19


def test_a_client_flooding_new_schemas_evicts_only_its_own() -> None:
    """Each client's compiled schemas are bounded in bytes: past its share, its own oldest go,
    and another client's schema stays cached (no recompile, no budget spent)."""
    import asyncio

    from services.gate.schemas import SchemaCache

    async def flood() -> SchemaCache:
        cache = SchemaCache(512, 1 << 20, max_bytes=64 << 20, client_bytes=1 << 20)
        await cache.prepare(1, SMALL)
        for n in range(40):  # ~100 KB of code each: ten times the client's share
            await cache.prepare(2, big_schema(60 + n))
        return cache

    cache = asyncio.run(flood())
    compiles = cache.compiles
    assert cache.owned(2) <= (1 << 20) + 200_000  # its share, plus the newest entry
    assert len(cache) < 40
    cache.validator(SMALL)  # still cached: no compile
    assert cache.compiles == compiles and cache.owned(1) > 0


def test_the_worker_reports_the_cpu_seconds_a_schema_took(worker: CompileWorker) -> None:
    small, big = worker.compile(SMALL), worker.compile(big_schema(1500))
    assert 0 <= small.cpu_s < big.cpu_s < 20  # (SMALL may be compiled already: ~0)
    with pytest.raises(SchemaRejected) as refused:
        worker.compile({"properties": {"s": {"pattern": "(a)\\1"}}})
    assert 0 <= refused.value.cpu_s < 1


def test_waiting_for_a_compile_costs_a_client_nothing_of_its_budget() -> None:
    """A client is charged the compile's CPU seconds, not the wall time: a compile that waits
    (behind another client's, or for a busy CPU) leaves its budget untouched."""
    import asyncio
    import time

    from services.gate.schemas import SchemaCache

    def waits_then_compiles(schema: dict[str, object]) -> Compiled:
        time.sleep(0.3)  # wall time, no CPU
        return compile_timed(schema)

    async def many() -> None:
        cache = SchemaCache(64, 1 << 20, waits_then_compiles, CompileBudget(0.5, 10))
        for n in range(6):  # 1.8 s of wall time, far under 0.5 s of CPU
            await cache.prepare(7, {**SMALL, "title": str(n)})

    asyncio.run(many())


def test_a_client_past_its_cpu_budget_gets_429_and_another_client_does_not() -> None:
    import asyncio

    from services.gate.schemas import SchemaCache

    def costly(schema: dict[str, object]) -> Compiled:
        return Compiled(compile_timed(schema).blob, 0.4)

    async def run() -> None:
        cache = SchemaCache(64, 1 << 20, costly, CompileBudget(1.0, 10))
        for n in range(3):
            await cache.prepare(7, {**SMALL, "title": str(n)})
        with pytest.raises(ApiError) as over:
            await cache.prepare(7, {**SMALL, "title": "3"})
        assert over.value.status == 429 and "CPU seconds" in over.value.body["message"]
        await cache.prepare(8, {**SMALL, "title": "3"})

    asyncio.run(run())
