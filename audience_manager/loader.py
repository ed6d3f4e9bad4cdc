"""Send an NDJSON file of events to the ingestion API in batches, with a progress bar.

A batch is all-or-nothing on the server, so a batch with invalid lines is sent again
without them: every valid event lands, every invalid one is reported with its line and
reason. Backend outages (503) and connection errors are retried with backoff.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

__all__ = ["LoadSummary", "load_file"]

NDJSON = "application/x-ndjson"


@dataclass
class LoadSummary:
    """What a load did: lines read, events accepted, lines rejected with reasons."""

    lines: int = 0
    accepted: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)
    seconds: float = 0.0


def _batches(path: Path, size: int) -> Iterator[tuple[list[tuple[int, bytes]], int]]:
    """Batches of (line number, line) and the bytes they span."""
    batch: list[tuple[int, bytes]] = []
    spanned = 0
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            spanned += len(line)
            if line.strip():
                batch.append((number, line.rstrip(b"\r\n")))
            if len(batch) == size:
                yield batch, spanned
                batch, spanned = [], 0
    if batch or spanned:
        yield batch, spanned


def _send(client: httpx.Client, batch: list[tuple[int, bytes]], summary: LoadSummary) -> None:
    delay = 0.5
    while batch:
        try:
            response = client.post(
                "/api/events/batch",
                content=b"\n".join(line for _, line in batch),
                headers={"content-type": NDJSON},
            )
        except httpx.TransportError:
            time.sleep(delay)
            delay = min(delay * 2, 10.0)
            continue
        if response.status_code == 202:
            summary.accepted += int(response.json().get("accepted", len(batch)))
            return
        if response.status_code == 503:
            time.sleep(float(response.headers.get("retry-after", delay)))
            continue
        if response.status_code == 422:
            details = response.json().get("error", {}).get("details", [])
            bad = {
                d["index"]: f"{d.get('path', '')}: {d.get('message', '')}"
                for d in details
                if isinstance(d.get("index"), int)
            }
            if not bad:
                raise RuntimeError(f"the batch was refused: {response.text[:500]}")
            summary.rejected.extend((batch[i][0], reason) for i, reason in sorted(bad.items()))
            batch = [item for i, item in enumerate(batch) if i not in bad]
            continue
        raise RuntimeError(f"ingestion answered {response.status_code}: {response.text[:500]}")


def load_file(
    path: Path, *, url: str, batch: int = 1000, api_key: str | None = None
) -> LoadSummary:
    """Send every event of ``path``; prints progress and a final summary."""
    console = Console(stderr=True)
    summary = LoadSummary()
    headers = {"x-api-key": api_key} if api_key else {}
    started = time.perf_counter()
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with (
        httpx.Client(base_url=url, headers=headers, timeout=60) as client,
        Progress(*columns, console=console) as progress,
    ):
        task = progress.add_task(path.name, total=path.stat().st_size)
        for lines, spanned in _batches(path, batch):
            summary.lines += len(lines)
            _send(client, lines, summary)
            progress.advance(task, spanned)
    summary.seconds = time.perf_counter() - started
    rate = summary.accepted / summary.seconds if summary.seconds else 0.0
    console.print(
        f"[bold]{summary.accepted:,}[/] accepted, [bold]{len(summary.rejected):,}[/] rejected "
        f"of {summary.lines:,} lines in {summary.seconds:.1f} s ({rate:,.0f} events/s)"
    )
    for number, reason in summary.rejected[:10]:
        console.print(f"  line {number}: {reason}")
    if len(summary.rejected) > 10:
        console.print(f"  … and {len(summary.rejected) - 10:,} more")
    return summary
