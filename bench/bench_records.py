"""The benchmark record (~300 bytes of flat JSON), dependency-free so that other tools' own
virtualenvs (dlt) can generate exactly the same records."""

from __future__ import annotations

import random
import string


def make_record(i: int, rng: random.Random) -> dict[str, object]:
    return {
        "id": i,
        "customer": "".join(rng.choices(string.ascii_letters, k=16)),
        "email": f"user{i}@example.com",
        "amount": round(rng.random() * 1000, 2),
        "currency": rng.choice(["EUR", "USD", "GBP"]),
        "status": rng.choice(["new", "paid", "shipped", "refunded"]),
        "created_at": "2026-11-26T10:00:00.000000Z",
        "note": "".join(rng.choices(string.ascii_lowercase + " ", k=90)),
        "address": {"city": rng.choice(["Lisbon", "Oslo", "Lima"]), "zip": f"{i % 99999:05d}"},
    }
