"""`gcl up` and `gcl serve`: run the coordinator (and, for `up`, its own NATS)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import click

from gcl.cli.config import URL_FILE, announce_url, data_dir
from gcl.cli.limits import role_settings
from gcl.coordinator.nats_auth import local_credentials, server_config
from gcl.coordinator.nats_server import NatsServer, port_in_use
from gcl.coordinator.service import Coordinator
from gcl.coordinator.settings import CoordinatorSettings
from gcl.sdk.loop_thread import LoopThread

db_option = click.option(
    "--db",
    "db_url",
    envvar="GCL_DB_URL",
    default=None,
    show_envvar=True,
    help="Database URL [default: sqlite:///<data-dir>/gcl.db]; PostgreSQL: "
    "postgresql+psycopg://user@host/db",
)
log_level_option = click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
metrics_port_option = click.option(
    "--metrics-port",
    envvar="GCL_METRICS_PORT",
    default=0,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Serve Prometheus metrics at http://GCL_METRICS_HOST:PORT/metrics (host default "
    "127.0.0.1); 0 = off [env GCL_METRICS_PORT]",
)


def _setup_logging(level: str, path: Path | None = None) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        filename=path,
        force=True,
    )


async def _serve(
    settings: CoordinatorSettings,
    on_ready: str | None = None,
    companion: Callable[[CoordinatorSettings], Coroutine[Any, Any, None]] | None = None,
) -> None:
    """Run until SIGINT/SIGTERM, then stop cleanly: the companion (demo) first, so its leases
    are released while the coordinator still answers, then commits finish and NATS drains."""
    coordinator = Coordinator(settings)
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # HUP: terminal closed
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, task.cancel)  # type: ignore[union-attr]
    side = None
    try:
        await coordinator.start()  # a standby waits here until it leads
        side = loop.create_task(companion(settings)) if companion else None
        if on_ready:
            click.echo(on_ready)
        await coordinator.failed()
    except asyncio.CancelledError:
        click.echo("stopping...")
    finally:
        if side is not None:
            side.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(side, 15)
        await coordinator.stop()


@click.command()
@db_option
@log_level_option
@metrics_port_option
@click.pass_context
def serve(ctx: click.Context, db_url: str | None, log_level: str, metrics_port: int) -> None:
    """Run the coordinator alone, next to an existing NATS (production).

    Reads GCL_NATS_URL / --nats, NATS credentials (GCL_NATS_USER, GCL_NATS_PASSWORD,
    GCL_NATS_TOKEN, GCL_NATS_CREDS) and TLS files (GCL_NATS_TLS_CA, GCL_NATS_TLS_CERT,
    GCL_NATS_TLS_KEY) from the environment.
    """
    _setup_logging(log_level)
    settings = CoordinatorSettings(
        nats_url=ctx.obj["nats_url"],
        prefix=ctx.obj["prefix"],
        db_url=db_url or f"sqlite:///{data_dir() / 'gcl.db'}",
        metrics_port=metrics_port,
    )
    asyncio.run(_serve(settings, "coordinator ready. Ctrl-C stops it."))


@click.command()
@click.option(
    "--port",
    default=4222,
    show_default=True,
    help="NATS port on 127.0.0.1; if taken, a free one is used and announced",
)
@db_option
@click.option("--demo", is_flag=True, help="Also create demo limits and run a demo workload")
@click.option(
    "--insecure",
    is_flag=True,
    help="Run NATS without users and permissions (anyone who reaches the port may do "
    "anything); by default each role has its own credential in <data-dir>/auth",
)
@click.option(
    "--dashboard",
    is_flag=True,
    help="Also open the dashboard in this terminal; quitting it stops everything "
    "(logs then go to <data-dir>/gcl.log)",
)
@log_level_option
@metrics_port_option
@click.pass_context
def up(
    ctx: click.Context,
    port: int,
    db_url: str | None,
    demo: bool,
    insecure: bool,
    dashboard: bool,
    log_level: str,
    metrics_port: int,
) -> None:
    """Start a private NATS (JetStream, loopback only) and the coordinator, in the foreground.

    Everything lives in the data folder (GCL_DATA_DIR, default ./.gcl). Other gcl commands
    run from the same folder find this NATS by themselves. Ctrl-C stops both.
    """
    folder = data_dir()
    folder.mkdir(parents=True, exist_ok=True)
    if dashboard and not sys.stdout.isatty():
        click.echo("--dashboard needs a terminal; running without it", err=True)
        dashboard = False
    _setup_logging(log_level, folder / "gcl.log" if dashboard else None)
    if port_in_use(port):
        click.echo(f"port {port} is taken on 127.0.0.1; using a free port instead", err=True)
        port = 0
    config = None
    if not insecure:
        config = server_config(local_credentials(folder), ctx.obj["prefix"])
    server = NatsServer(folder / "nats", port=port, config=config).start()
    url_file = announce_url(folder, server.url)
    settings = CoordinatorSettings(
        nats_url=server.url,
        prefix=ctx.obj["prefix"],
        db_url=db_url or f"sqlite:///{folder / 'gcl.db'}",
        metrics_port=metrics_port,
    )
    banner = _banner(server.url, settings.db_url, folder)
    companion = _demo() if demo else None
    try:
        if dashboard:
            _up_with_dashboard(settings, companion)
            click.echo(banner.splitlines()[0].replace("is up", "was up"))
        else:
            asyncio.run(_serve(settings, banner, companion))
    finally:
        with contextlib.suppress(OSError):
            Path(url_file).unlink()
        server.stop()
        click.echo("stopped NATS and coordinator.")


Companion = Callable[[CoordinatorSettings], Coroutine[Any, Any, None]]


def _demo() -> Companion:
    from gcl.cli.demo import run_demo

    return run_demo


def _up_with_dashboard(settings: CoordinatorSettings, companion: Companion | None) -> None:
    """Coordinator (and demo) on a background event loop, the dashboard in front; quitting
    the dashboard stops the rest in order."""
    thread = LoopThread("gcl-up")
    finished = threading.Event()

    async def launch() -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(_serve(settings, None, companion))
        task.add_done_callback(lambda _: finished.set())
        return task

    task = thread.run(launch())
    try:
        from gcl.tui import run_dashboard  # Textual loads only here

        run_dashboard(
            role_settings(settings.nats_url, settings.prefix, "operator"),
            configure_logging=False,
        )
    finally:
        thread.call_soon(task.cancel)
        finished.wait(30)
        thread.stop()


def _banner(url: str, db_url: str, folder: Path) -> str:
    return "\n".join(
        [
            f"gcl is up: NATS on {url} (JetStream), coordinator on {db_url}",
            f"  other shells in this folder find it via {folder / URL_FILE}; elsewhere:",
            f"  export GCL_NATS_URL={url}",
            "  try: gcl ls    ·    gcl dashboard    ·    Ctrl-C stops everything",
        ]
    )
