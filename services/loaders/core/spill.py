"""Staged rows as delimited text lines in a temporary file (``Spill``): a lease of any size is
planned in bounded memory (in memory up to 8 MiB, then on disk), and read back once."""

from __future__ import annotations

import tempfile
from array import array
from collections.abc import Iterator
from typing import IO


class Spill:
    """Rows as delimited text lines in a temp file (spilled to disk past 8 MiB), read back once.

    Fields are already rendered by the warehouse (``plan.Render``); a quoted field may itself hold
    a newline, so lines are found by their recorded byte lengths, never by splitting. A
    table's column list may grow while rows arrive; each line remembers how many fields it
    has, and ``text`` pads the shorter ones with NULLs.
    """

    def __init__(self) -> None:
        self._file: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024)  # noqa: SIM115
        self._widths = array("I")
        self._sizes = array("I")  # each line's length in bytes (without its newline)
        self._pending: list[str] = []  # lines not yet written, to write them a thousand at once

    def __len__(self) -> int:
        return len(self._widths)

    def append(self, fields: list[str]) -> None:
        self.append_line(",".join(fields), len(fields))

    def append_line(self, line: str, width: int) -> None:
        """One row whose ``width`` fields are already joined (without the newline)."""
        pending = self._pending
        pending.append(line)
        self._widths.append(width)
        if len(pending) >= 1024:
            self._flush()

    def append_rendered(self, text: bytes, sizes: bytes, widths: bytes) -> None:
        """Rows already joined, each line ending in a newline, with each line's size in bytes
        and its width in fields as native ``array("I")`` bytes (``native.stage``)."""
        self._flush()
        self._sizes.frombytes(sizes)
        self._widths.frombytes(widths)
        self._file.write(text)

    def _flush(self) -> None:
        pending = self._pending
        if pending:
            # str.isascii is a flag lookup: only non-ASCII lines are encoded twice.
            self._sizes.extend([len(x) if x.isascii() else len(x.encode()) for x in pending])
            pending.append("")
            self._file.write("\n".join(pending).encode())
            self._pending = []

    def text(self, width: int) -> Iterator[bytes]:
        """The lines, each padded to ``width`` fields, in chunks."""
        self._flush()
        self._file.seek(0)
        if not self._widths or min(self._widths) == width:  # nothing to pad: the file as is
            while chunk := self._file.read(8 << 20):
                yield chunk
            return
        pending: list[bytes] = []
        read = self._file.read
        for size, have in zip(self._sizes, self._widths, strict=True):
            line = read(size + 1)
            pending.append(line if have == width else line[:-1] + b"," * (width - have) + b"\n")
            if len(pending) >= 2048:
                yield b"".join(pending)
                pending = []
        if pending:
            yield b"".join(pending)

    def close(self) -> None:
        self._file.close()
