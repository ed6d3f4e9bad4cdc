"""``audience-manager``: run the platform, or one part of it, and load events."""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
import time
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Annotated

import typer

from audience_manager.config import Settings

__all__ = ["app", "ingestion", "load", "main", "management", "migrate", "processor", "serve"]

app = typer.Typer(help="Real-time audience segmentation.", no_args_is_help=True)
log = logging.getLogger("audience_manager")

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Where data is kept.")]
ManagementPort = Annotated[int | None, typer.Option("--management-port")]
IngestionPort = Annotated[int | None, typer.Option("--ingestion-port")]
Host = Annotated[str | None, typer.Option("--host", help="Address to listen on.")]


def _settings(**overrides: object) -> Settings:
    values = {k: v for k, v in overrides.items() if v is not None}
    settings = Settings(**values)  # type: ignore[arg-type]
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s",
    )
    return settings


def _announce_auth(settings: Settings) -> None:
    if not settings.auth_required:
        log.warning("API keys are off: none configured and listening on loopback only")


def _serve_app(kind: str, settings: Settings) -> None:
    import uvicorn
    from fastapi import FastAPI

    from audience_manager.api.ingestion.app import create_app as create_ingestion
    from audience_manager.api.management.app import create_app as create_management

    application: FastAPI
    if kind == "management":
        application, port = create_management(settings), settings.management_port
    else:
        application, port = create_ingestion(settings), settings.ingestion_port
    _announce_auth(settings)
    uvicorn.run(
        application,
        host=settings.host,
        port=port,
        log_level=settings.log_level.lower(),
        access_log=False,
    )


def _child(kind: str, settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s",
    )
    if kind == "processor":
        from audience_manager.processor.service import run_processor

        run_processor(settings)
    else:
        _serve_app(kind, settings)


@app.command()
def serve(
    data_dir: DataDir = None,
    management_port: ManagementPort = None,
    ingestion_port: IngestionPort = None,
    host: Host = None,
) -> None:
    """Run everything: management API, ingestion API and processor, on embedded defaults."""
    settings = _settings(
        data_dir=data_dir,
        management_port=management_port,
        ingestion_port=ingestion_port,
        host=host,
    )
    from audience_manager.catalog.migrate import migrate

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate(settings.catalog)
    context = multiprocessing.get_context("spawn")
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    children: dict[str, BaseProcess] = {}
    restarts: dict[str, list[float]] = {k: [] for k in ("processor", "ingestion", "management")}

    def start(kind: str) -> None:
        process = context.Process(target=_child, args=(kind, settings), name=kind, daemon=False)
        process.start()
        children[kind] = process

    for kind in restarts:
        start(kind)
    log.info(
        "serving: management http://%s:%d  ingestion http://%s:%d  data %s",
        settings.host,
        settings.management_port,
        settings.host,
        settings.ingestion_port,
        settings.data_dir.resolve(),
    )
    exit_code = 0
    while not stop.is_set():
        stop.wait(0.5)
        for kind, process in list(children.items()):
            if process.is_alive() or stop.is_set():
                continue
            recent = [t for t in restarts[kind] if time.monotonic() - t < 60]
            if len(recent) >= 5:
                log.error("%s keeps failing (exit %s); stopping", kind, process.exitcode)
                stop.set()
                exit_code = 1
                break
            log.warning("%s exited with %s; restarting", kind, process.exitcode)
            restarts[kind] = [*recent, time.monotonic()]
            start(kind)
    # Stop taking events first, then let the processor finish its batch and snapshot.
    for kind in ("ingestion", "management", "processor"):
        process = children[kind]
        if process.is_alive() and process.pid is not None:
            process.terminate()
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    log.info("stopped")
    raise typer.Exit(exit_code)


@app.command()
def management(data_dir: DataDir = None, port: ManagementPort = None, host: Host = None) -> None:
    """Run the Segment Management API alone."""
    _child("management", _settings(data_dir=data_dir, management_port=port, host=host))


@app.command()
def ingestion(data_dir: DataDir = None, port: IngestionPort = None, host: Host = None) -> None:
    """Run the Event Ingestion API alone."""
    _child("ingestion", _settings(data_dir=data_dir, ingestion_port=port, host=host))


@app.command()
def processor(data_dir: DataDir = None) -> None:
    """Run the processor alone."""
    _child("processor", _settings(data_dir=data_dir))


@app.command()
def migrate(data_dir: DataDir = None) -> None:
    """Create or upgrade the catalog database."""
    from audience_manager.catalog.migrate import migrate as run_migrations

    settings = _settings(data_dir=data_dir)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    run_migrations(settings.catalog)
    typer.echo(f"catalog at {settings.catalog} is up to date")


@app.command()
def load(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="NDJSON events.")],
    url: Annotated[str, typer.Option(help="Ingestion API.")] = "http://127.0.0.1:8082",
    batch: Annotated[int, typer.Option(min=1, max=1000)] = 1000,
    api_key: Annotated[str | None, typer.Option(envvar="AM_API_KEY")] = None,
) -> None:
    """Send an NDJSON file of events to the ingestion API, with progress and a summary."""
    from audience_manager.loader import load_file

    summary = load_file(file, url=url, batch=batch, api_key=api_key)
    if summary.rejected:
        raise typer.Exit(1)


def main() -> None:
    """Entry point of ``python -m audience_manager``."""
    app(prog_name="audience-manager")
