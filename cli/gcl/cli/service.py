"""`gcl up` and `gcl serve`: run the coordinator (and, for `up`, its own NATS).

Stopping is bounded: from SIGTERM, SIGINT or SIGHUP to exit takes at most STOP_SECONDS,
whatever NATS (up, gone, dying at the same moment) and the database are doing. The coordinator's
own stop is bounded step by step; a watchdog thread armed by the signal exits the process if
anything still holds it (a second signal exits at once); and the event loop is closed without
waiting on tasks that ignore cancellation, as asyncio.run would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click

from gcl.cli.config import URL_FILE, announce_url, data_dir
from gcl.cli.limits import role_settings
from gcl.coordinator.service import Coordinator
from gcl.coordinator.settings import CoordinatorSettings
from gcl.sdk.exceptions import StorageError
from gcl.sdk.loop_thread import LoopThread

T = TypeVar("T")
log = logging.getLogger("gcl.cli")
STOP_SECONDS = 10.0  # from the stop signal to exit, at most
WATCHDOG_SECONDS = STOP_SECONDS - 0.5  # the watchdog's own bound, inside STOP_SECONDS
COMPANION_SECONDS = 1.5  # the demo's time to release its leases while the coordinator answers
EXIT_UNAVAILABLE = 2  # as gcl.cli.main: NATS unreachable
EXIT_STORAGE = 3  # as gcl.cli.main: the database failed
EXIT_INTERRUPTED = 130  # a second signal: stop at once

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
    stop: asyncio.Event | None = None,
) -> int:
    """Serve until SIGINT/SIGTERM/SIGHUP (or `stop` is set), then stop within STOP_SECONDS:
    the companion (demo) first, so its leases are released while the coordinator still
    answers, then the coordinator. 0 on a clean stop; raises StorageError (exit 3) when the
    database kept failing, or when the stop had to abandon uncommitted changes."""
    coordinator = Coordinator(settings)
    stop = stop or asyncio.Event()
    _on_stop_signals(stop, coordinator)
    loop = asyncio.get_running_loop()
    stopping = loop.create_task(stop.wait())
    starting = loop.create_task(coordinator.start())  # a standby waits here until it leads
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():  # stopped while standing by: nothing to hand over
        starting.cancel()
        await asyncio.wait({starting}, timeout=STOP_SECONDS)
        click.echo("stopped.")
        return 0
    starting.result()  # raises what kept it from starting
    side = loop.create_task(companion(settings)) if companion else None
    if on_ready:
        click.echo(on_ready)
    failed = loop.create_task(coordinator.failed())
    try:
        await asyncio.wait({failed, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if side is not None:
            side.cancel()
            await asyncio.wait({side}, timeout=COMPANION_SECONDS)
        committed = await coordinator.stop()
    if failed.done():
        failed.result()  # raises the StorageError that stopped it
    failed.cancel()
    if not committed:
        raise StorageError(
            "stopped without committing every change: the database did not answer in time "
            "(nothing uncommitted was announced; the next start reloads the last commit)"
        )
    click.echo("stopped.")
    return 0


def _on_stop_signals(stop: asyncio.Event, coordinator: Coordinator) -> None:
    """First signal: stop, and arm the watchdog. Second signal: exit at once. Off the main
    thread (gcl up --dashboard) the caller sets `stop` instead."""
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():
            _exit_now(EXIT_INTERRUPTED, "a second stop signal: exiting at once")
        stop.set()
        click.echo("stopping...")
        _arm_watchdog(coordinator)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # HUP: terminal closed
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, on_signal)


def _arm_watchdog(coordinator: Coordinator) -> None:
    """Exit the process if it is still here WATCHDOG_SECONDS after the stop signal: the stop
    itself is bounded, so this only catches what is not (a thread stuck in a driver)."""

    def watch() -> None:
        time.sleep(WATCHDOG_SECONDS)
        code = EXIT_STORAGE if coordinator.uncommitted() else EXIT_UNAVAILABLE
        _exit_now(code, f"could not stop cleanly within {WATCHDOG_SECONDS:g}s: exiting now")

    threading.Thread(target=watch, name="gcl-stop-watchdog", daemon=True).start()


def _exit_now(code: int, why: str) -> None:
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.write(f"error: {why}\n")
        sys.stderr.flush()
    os._exit(code)


def run_bounded(main: Coroutine[Any, Any, T], grace: float = 1.0) -> T:
    """asyncio.run without its unbounded waits: when `main` is done, tasks still running are
    cancelled and given `grace` seconds, then the loop is closed whether they ended or not
    (Python 3.11's wait_for can swallow a cancellation and keep a task alive for ever)."""
    loop = asyncio.new_event_loop()
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(main)
    finally:
        try:
            left = [task for task in asyncio.all_tasks(loop) if not task.done()]
            for task in left:
                task.cancel()
            if left:
                loop.run_until_complete(asyncio.wait(left, timeout=grace))
            gens = loop.create_task(loop.shutdown_asyncgens())
            loop.run_until_complete(asyncio.wait({gens}, timeout=grace))
        finally:
            # Tasks abandoned above would report "destroyed but pending" when collected.
            loop.set_exception_handler(lambda _loop, ctx: log.debug("at exit: %s", ctx))
            asyncio.set_event_loop(None)
            loop.close()


@click.command()
@db_option
@log_level_option
@metrics_port_option
@click.pass_context
def serve(ctx: click.Context, db_url: str | None, log_level: str, metrics_port: int) -> int:
    """Run the coordinator alone, next to an existing NATS (production).

    Reads GCL_NATS_URL / --nats, NATS credentials (GCL_NATS_USER, GCL_NATS_PASSWORD,
    GCL_NATS_TOKEN, GCL_NATS_CREDS) and TLS files (GCL_NATS_TLS_CA, GCL_NATS_TLS_CERT,
    GCL_NATS_TLS_KEY) from the environment; other GCL_* settings too (docs/architecture.md).

    SIGTERM, SIGINT or SIGHUP stop it within 10 s whatever NATS and the database do. Exit
    codes: 0 stopped cleanly; 1 a user error or a conflict (another coordinator); 2 NATS
    unreachable at start; 3 the database cannot be opened, kept failing (db_retry_seconds),
    or did not commit in time at stop.
    """
    _setup_logging(log_level)
    settings = CoordinatorSettings(
        nats_url=ctx.obj["nats_url"],
        prefix=ctx.obj["prefix"],
        db_url=db_url or f"sqlite:///{data_dir() / 'gcl.db'}",
        metrics_port=metrics_port,
    )
    return run_bounded(_serve(settings, "coordinator ready. Ctrl-C stops it."))


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
) -> int:
    """Start a private NATS (JetStream, loopback only) and the coordinator, in the foreground.

    Everything lives in the data folder (GCL_DATA_DIR, default ./.gcl). Other gcl commands
    run from the same folder find this NATS by themselves. Ctrl-C (or SIGTERM) stops both;
    exit codes as for `gcl serve`.
    """
    from gcl.coordinator.nats_auth import local_credentials, roles_config
    from gcl.coordinator.nats_server import NatsServer, port_in_use

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
        config = roles_config(local_credentials(folder), ctx.obj["prefix"])
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
            code = _up_with_dashboard(settings, companion)
            click.echo(banner.splitlines()[0].replace("is up", "was up"))
        else:
            code = run_bounded(_serve(settings, banner, companion))
    finally:
        with contextlib.suppress(OSError):
            Path(url_file).unlink()
        server.stop(timeout=3)
        click.echo("stopped NATS and coordinator.")
    return code


Companion = Callable[[CoordinatorSettings], Coroutine[Any, Any, None]]


def _demo() -> Companion:
    from gcl.cli.demo import run_demo

    return run_demo


def _up_with_dashboard(settings: CoordinatorSettings, companion: Companion | None) -> int:
    """Coordinator (and demo) on a background event loop, the dashboard in front; quitting
    the dashboard stops the rest in order."""
    thread = LoopThread("gcl-up")
    finished = threading.Event()
    stop: asyncio.Event | None = None

    async def launch() -> asyncio.Task[int]:
        nonlocal stop
        stop = asyncio.Event()
        task = asyncio.get_running_loop().create_task(_serve(settings, None, companion, stop))
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
        if stop is not None:
            thread.call_soon(stop.set)
        finished.wait(STOP_SECONDS)
        thread.stop()
    if not task.done():
        click.echo(f"error: the coordinator did not stop within {STOP_SECONDS:g}s", err=True)
        return EXIT_STORAGE
    return 0 if task.cancelled() else task.result()


def _banner(url: str, db_url: str, folder: Path) -> str:
    return "\n".join(
        [
            f"gcl is up: NATS on {url} (JetStream), coordinator on {db_url}",
            f"  other shells in this folder find it via {folder / URL_FILE}; elsewhere:",
            f"  export GCL_NATS_URL={url}",
            "  try: gcl ls    ·    gcl dashboard    ·    Ctrl-C stops everything",
        ]
    )
