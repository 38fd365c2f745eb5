"""A client that posts a fresh 250 KB schema on several connections in a loop, run as its own
process so that building and sending the schemas does not delay (through the GIL) the
requests a test is timing.

    python -m support.schema_flood GATE_URL TOKEN CONNECTIONS

prints each answer's status code on its own line until it is terminated.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

import httpx
import orjson


def fresh_schema(tag: str, size: int = 250_000) -> dict[str, Any]:
    """A schema of about ``size`` bytes that no one has sent before."""
    props: dict[str, Any] = {"id": {"type": "integer"}}
    n = total = 0
    while total < size:
        spec = {"type": ["string", "null"], "maxLength": 64 + n % 7}
        props[f"{tag}_{n}"] = spec
        total += len(tag) + 12 + len(orjson.dumps(spec))
        n += 1
    return {"type": "object", "properties": props}


def flood(gate: str, token: str, k: int, out: threading.Lock) -> None:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    with httpx.Client(base_url=gate, timeout=60) as http:
        n = 0
        while True:
            body = {
                "table_name": "costly",
                "schema": fresh_schema(f"k{k}n{n}"),
                "messages": [{"action": "upsert", "sequence": 1, "data": {"id": 1}}],
            }
            try:
                r = http.post("/v2/import/batch", content=orjson.dumps(body), headers=headers)
            except httpx.RemoteProtocolError:  # a kept-alive connection the gate closed
                continue
            with out:
                print(r.status_code, flush=True)
            n += 1


def main() -> None:
    gate, token, connections = sys.argv[1], sys.argv[2], int(sys.argv[3])
    out = threading.Lock()
    threads = [
        threading.Thread(target=flood, args=(gate, token, k, out), daemon=True)
        for k in range(connections)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()
