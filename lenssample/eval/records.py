"""Per-item result records: one JSON object per line, appended and synced as each item finishes.

A run that is interrupted (killed, out of memory, bad item) keeps every finished record; a rerun reads them back and
evaluates only what is missing, so nothing is lost or counted twice. A line cut short by a kill mid-write is
dropped (and trimmed from the file before appending). Records are keyed by
``(model, lens, task, strategy, item)``; when several files (one per process of a sharded run) hold the same key,
the first one read wins.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

KEY_FIELDS = ("model", "lens", "task", "strategy", "item")


def record_key(record: dict[str, Any]) -> tuple[str, ...]:
    return tuple(str(record[name]) for name in KEY_FIELDS)


def record_files(out_dir: str | Path) -> list[Path]:
    return sorted(Path(out_dir).glob("records*.jsonl"))


def read_records(out_dir: str | Path) -> list[dict[str, Any]]:
    """Every complete record of every ``records*.jsonl`` in ``out_dir``, deduplicated by key, sorted by key."""
    seen: dict[tuple[str, ...], dict[str, Any]] = {}
    for path in record_files(out_dir):
        text = path.read_text(encoding="utf-8")
        # up to the last newline: what follows it is a line cut short by a kill (dropped)
        for number, line in enumerate(text[: text.rfind("\n") + 1].splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(
                    f"{path}:{number}: corrupt record ({err.msg}); delete that line to resume"
                ) from err
            seen.setdefault(record_key(record), record)
    return [seen[key] for key in sorted(seen)]


@contextmanager
def record_writer(path: str | Path) -> Iterator[Callable[[dict[str, Any]], None]]:
    """A function appending records to one JSONL file, each flushed and fsynced before the next item starts.

    The file is locked (``.NAME.lock`` beside it) while the writer is open: a second run writing the same records
    (``lenssample eval`` twice on one out folder) is refused at once instead of evaluating every item twice. The
    processes of a sharded run write one file each, so they never wait for each other."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path.with_name(f".{path.name}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:  # an OSError: the command line reports it in one line, as any file it cannot use
        raise BlockingIOError(
            f"{str(path)!r} is being written by another run (lenssample eval on the same out folder); wait for it "
            "to finish (a rerun then resumes), or pass another --out"
        ) from None
    try:
        data = path.read_bytes() if path.is_file() else b""
        if data and not data.endswith(b"\n"):  # a line cut short by a kill: trim it
            with path.open("r+b") as stream:
                stream.truncate(data.rfind(b"\n") + 1)
        with path.open("a", encoding="utf-8") as stream:

            def write(record: dict[str, Any]) -> None:
                stream.write(json.dumps(record, allow_nan=True) + "\n")
                stream.flush()
                os.fsync(stream.fileno())

            yield write
    finally:
        lock.release()
