"""Types of the native module built from ``services/loaders/native/src/lib.rs``."""

class Plan:
    def __init__(
        self,
        size: int,
        fields: list[tuple[list[str], str, str | None, int]],
        width: int,
        received_at: int,
        sequence: int,
        batched_at: int | None,
        table_version: int | None,
        extracted_at: int | None,
    ) -> None: ...

def stage(
    text: bytes,
    start: int,
    end: int,
    limit: int,
    plans: list[Plan] | None,
    extracted_plans: list[Plan] | None,
    received_at: str,
    table_version: str,
    batched_at: str,
) -> tuple[bytes, bytes, bytes, int, int, list[int], list[int]]: ...
def float_repr(value: float) -> str: ...
def takes_datetime(text: str) -> bool: ...
