"""`gcl run`, `gcl acquire`, `gcl release`: a worker's slots from a shell, a script or cron.

`gcl run NAME -- COMMAND` is flock or GNU sem, but global: it waits for the slots, runs the
command while the lease is renewed, passes signals on, releases at exit and exits with the
command's status. `gcl acquire NAME --ttl 2h` is for programs that cannot stay running: it
prints a long-lived lease's id and secret, and `gcl release` ends it later. Both act as the
worker role. While they wait they say why on stderr (place in line, holders, an estimate).

Exit statuses: the command's own (128+N when a signal N ended it); 75 (EX_TEMPFAIL) when the
slots could not be had: `--timeout` ran out, or no coordinator answered; 126 the command could
not be run, 127 it was not found; 1 bad use (a bad name, a limit missing with --strict); 130 /
143 / 129 when SIGINT / SIGTERM / SIGHUP stopped a wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shlex
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import click
from pydantic import ValidationError

from gcl.cli.limits import JSON, nats_settings
from gcl.protocol import MAX_LONG_LIVED_TTL, RELEASE, HeldLease
from gcl.sdk import format as fmt
from gcl.sdk.client import AsyncClient
from gcl.sdk.events import parse_duration
from gcl.sdk.exceptions import (
    AcquireTimeout,
    CoordinatorUnavailable,
    GCLError,
    InvalidRequest,
    LeaseLost,
)
from gcl.sdk.leases import Lease
from gcl.sdk.renewer import close_all
from gcl.sdk.settings import ClientSettings
from gcl.sdk.transport import Rpc, connect

EXIT_TEMPFAIL = 75  # sysexits.h EX_TEMPFAIL: could not acquire now, try again later
EXIT_CANNOT_RUN = 126
EXIT_NOT_FOUND = 127
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
COMMAND_KEY = "gcl.command"
MAX_LABEL = 200


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """`90`, `90s`, `10m`, `2h`, `7d`, `2w` -> seconds (a click callback)."""
    if value is None:
        return None
    try:
        seconds = parse_duration(value, param.name or "value")
    except InvalidRequest as exc:
        raise click.BadParameter(str(exc), ctx, param) from None
    if seconds <= 0:
        raise click.BadParameter(f"{value!r} must be more than 0", ctx, param)
    return seconds


class CommandAfterDashes(click.Command):
    """Everything after the first `--` is the command to run, kept apart from gcl's options."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args:
            cut = args.index("--")
            ctx.meta[COMMAND_KEY] = args[cut + 1 :]
            args = args[:cut]
        return super().parse_args(ctx, args)


def _worker_settings(ctx: click.Context) -> ClientSettings:
    settings = nats_settings(ctx, "worker", ClientSettings)
    assert isinstance(settings, ClientSettings)
    return settings


@contextlib.contextmanager
def _said_on_stderr(quiet: bool, prog: str) -> Iterator[None]:
    """The SDK's lines (why it waits, a lost lease) on stderr while the block runs: cron mails
    them, shells show them. The logger is left as it was found afterwards."""
    logger = logging.getLogger("gcl.sdk")
    level, propagate = logger.level, logger.propagate
    handler = _StderrLines()
    handler.setFormatter(logging.Formatter(f"{prog}: %(message)s"))
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


class _StderrLines(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is now (tests swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.setStream(sys.stderr)
        super().emit(record)


def _could_not(prog: str, exc: GCLError) -> int:
    click.echo(f"{prog}: could not acquire: {exc}", err=True)
    return EXIT_TEMPFAIL


def _acquire_options(command: Any) -> Any:
    """The options `gcl run` and `gcl acquire` share."""
    for option in reversed(
        [
            click.argument("names", nargs=-1, required=True),
            click.option("--occupy", "-n", type=click.IntRange(1), default=1, show_default=True,
                         help="Slots to take on every NAME"),
            click.option("--timeout", callback=_duration,
    metavar="DURATION", default=None,
                         help="Give up waiting after this long (90s, 10m) and exit 75 "
                         "[default: wait for ever]"),
            click.option("--label", default=None, help="Shown on the lease to operators"),
            click.option("--strict", is_flag=True,
                         help="A NAME that is not a limit is an error (else it is not enforced)"),
            click.option("--quiet", "-q", is_flag=True,
                         help="Say nothing on stderr while waiting; errors only"),
        ]
    ):  # fmt: skip
        command = option(command)
    return command


# --- gcl run -------------------------------------------------------------------------------


@click.command(
    "run",
    cls=CommandAfterDashes,
    short_help="Run a command while holding slots: a global flock.",
)
@_acquire_options
@click.option(
    "--ttl",
    callback=_duration,
    metavar="DURATION",
    default=None,
    help="Lease TTL, renewed every third of it while the command runs [default: 30s]",
)
@click.option(
    "--on-lost",
    type=click.Choice(["term", "ignore"]),
    default="term",
    show_default=True,
    help="If the lease is lost while the command runs (revoked, expired): send it SIGTERM, "
    "or let it run on unprotected",
)
@click.pass_context
def run_command(
    ctx: click.Context,
    names: tuple[str, ...],
    occupy: int,
    timeout: float | None,
    label: str | None,
    strict: bool,
    quiet: bool,
    ttl: float | None,
    on_lost: str,
) -> int:
    """Wait for OCCUPY slots on every NAME, run COMMAND while holding them, then release them.

    \b
        gcl run gpu:gpu-1 -- python train.py --epochs 3
        gcl run backup db --timeout 10m -- ./nightly-backup.sh     (cron: exit 75 = try later)

    Put COMMAND after `--`. The lease is renewed while it runs; SIGINT, SIGTERM and SIGHUP
    are passed on to it (a Ctrl-C at a terminal reaches it directly); the slots are released
    when it exits, and gcl exits with its status (128+N if signal N ended it). 75 means the
    slots could not be had (--timeout, or no coordinator answered); 126/127 that COMMAND could
    not be run or found.
    """
    command = ctx.meta.get(COMMAND_KEY) or []
    if not command:
        raise click.UsageError("give the command after --: gcl run NAME [NAME...] -- COMMAND")
    settings = _worker_settings(ctx)
    if label is None:
        label = _label(command)
    job = Job(list(names), occupy, timeout, ttl, label, strict, on_lost == "term", command)
    try:
        with _said_on_stderr(quiet, "gcl run"):
            return asyncio.run(job.run(settings))
    except (AcquireTimeout, CoordinatorUnavailable) as exc:
        return _could_not("gcl run", exc)
    finally:
        close_all()  # the renewer's thread and connection


def _label(command: list[str]) -> str:
    """`gcl run ./backup.sh --full`: what operators see on the lease (one printable line)."""
    text = " ".join(f"gcl run {shlex.join(command)}".split())
    return "".join(c if c.isprintable() else "?" for c in text)[:MAX_LABEL]


@dataclass
class Job:
    """One `gcl run`: the slots it wants and the command it runs while holding them."""

    names: list[str]
    occupy: int
    timeout: float | None
    ttl: float | None
    label: str
    strict: bool
    stop_when_lost: bool
    command: list[str]
    child: asyncio.subprocess.Process | None = None
    stopped_by: int = 0  # the signal that ended the wait, if one did

    async def run(self, settings: ClientSettings) -> int:
        task = asyncio.current_task()
        assert task is not None
        with _signals(lambda signum: self._on_signal(signum, task)):
            try:
                return await self._hold_and_run(settings)
            except asyncio.CancelledError:
                if self.stopped_by:
                    click.echo(
                        f"gcl run: stopped by {signal.Signals(self.stopped_by).name}", err=True
                    )
                    return 128 + self.stopped_by
                raise

    async def _hold_and_run(self, settings: ClientSettings) -> int:
        status = 0
        async with AsyncClient(settings, label=self.label) as client:
            try:
                async with client.concurrency(
                    self.names,
                    self.occupy,
                    self.timeout,
                    strict=self.strict,
                    lease_ttl=self.ttl,
                    on_lost=self._on_lost,
                ):
                    status = await self._execute()
            except LeaseLost as exc:
                click.echo(f"gcl run: {exc}", err=True)
        return status

    async def _execute(self) -> int:
        try:
            self.child = await asyncio.create_subprocess_exec(*self.command)
        except FileNotFoundError:
            click.echo(f"gcl run: command not found: {self.command[0]}", err=True)
            return EXIT_NOT_FOUND
        except OSError as exc:
            click.echo(f"gcl run: cannot run {self.command[0]}: {exc.strerror}", err=True)
            return EXIT_CANNOT_RUN
        code = await self.child.wait()
        return 128 - code if code < 0 else code  # killed by signal N: 128+N, as shells say

    def _on_signal(self, signum: int, task: asyncio.Task[Any]) -> None:
        child = self.child
        if child is None:  # still waiting for the slots: give up the wait
            self.stopped_by = self.stopped_by or signum
            task.cancel()
        elif child.returncode is None and not (
            signum == signal.SIGINT and _terminal_signals_the_child()
        ):
            child.send_signal(signum)

    def _on_lost(self, lease: Lease) -> None:
        child = self.child
        if self.stop_when_lost and child is not None and child.returncode is None:
            click.echo(f"gcl run: lease lost ({lease.lost_reason}): stopping the command", err=True)
            child.send_signal(signal.SIGTERM)


@contextlib.contextmanager
def _signals(handler: Callable[[int], None]) -> Iterator[None]:
    """Route SIGINT, SIGTERM, SIGHUP to `handler` while the block runs (main thread only)."""
    loop = asyncio.get_running_loop()
    installed = []
    for signum in FORWARDED:
        try:
            loop.add_signal_handler(signum, handler, signum)
            installed.append(signum)
        except (ValueError, RuntimeError, NotImplementedError):  # not the main thread
            pass
    try:
        yield
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


def _terminal_signals_the_child() -> bool:
    """A Ctrl-C at a terminal goes to its whole foreground process group, the command
    included: passing it on as well would deliver it twice."""
    try:
        fd = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY)
    except OSError:
        return False  # no controlling terminal (cron, a service): nobody else tells the child
    try:
        return os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:
        return False
    finally:
        os.close(fd)


# --- gcl acquire / gcl release ---------------------------------------------------------------


@click.command("acquire", short_help="Take a long-lived lease for a script; prints its secret.")
@_acquire_options
@click.option(
    "--ttl",
    callback=_duration,
    metavar="DURATION",
    required=True,
    help="How long the lease lasts unless released first: 90s, 2h, 30d (up to 10 years)",
)
@JSON
@click.pass_context
def acquire_command(
    ctx: click.Context,
    names: tuple[str, ...],
    occupy: int,
    timeout: float | None,
    label: str | None,
    strict: bool,
    quiet: bool,
    ttl: float,
    as_json: bool,
) -> int:
    """Take OCCUPY slots on every NAME for up to --ttl, for a script or a program that cannot
    keep running to renew a lease. Prints the lease id and its secret; `gcl release` ends it.

    \b
        eval "$(gcl acquire db --ttl 2h)"     # export GCL_LEASE_ID=... GCL_LEASE_SECRET=...
        ...
        gcl release                           # reads both from the environment
    \b
        gcl acquire db --ttl 30d --json > lease.json
        gcl release < lease.json

    The lease is long-lived: not renewed, it ends at `gcl release`, `gcl revoke`, or when its
    ttl has passed; it survives a coordinator restart. Keep the secret like a password.
    Exit 75 if --timeout ran out or no coordinator answered.
    """
    if ttl > MAX_LONG_LIVED_TTL:
        raise click.BadParameter(f"at most {fmt.duration(MAX_LONG_LIVED_TTL)}", param_hint="--ttl")
    settings = _worker_settings(ctx)

    async def take() -> Lease:
        async with AsyncClient(settings, label=label or "gcl acquire") as client:
            return await client.acquire(
                list(names), occupy, timeout, strict=strict, lease_ttl=ttl, long_lived=True
            )

    try:
        with _said_on_stderr(quiet, "gcl acquire"):
            lease = asyncio.run(take())
    except (AcquireTimeout, CoordinatorUnavailable) as exc:
        return _could_not("gcl acquire", exc)
    _print_lease(lease, as_json)
    return 0


def _print_lease(lease: Lease, as_json: bool) -> None:
    info = lease.info
    if info is None:  # every name was missing: nothing is held, nothing to release
        click.echo(
            f"gcl acquire: no limit named {', '.join(lease.missing)}: nothing held "
            f"(create it with `gcl create {lease.missing[0]} --limit N`, or pass --strict)",
            err=True,
        )
        if as_json:
            click.echo(json.dumps({"lease_id": None, "missing": lease.missing}))
        return
    expires_at = info.granted_at + info.ttl
    if as_json:
        record = {
            "lease_id": info.lease_id,
            "secret": lease.secret,
            "names": info.names,
            "occupy": info.occupy,
            "ttl": info.ttl,
            "long_lived": info.long_lived,
            "granted_at": info.granted_at,
            "expires_at": expires_at,
            "fencing_tokens": info.fencing_tokens,
            "missing": lease.missing,
        }
        click.echo(json.dumps(record, indent=2, sort_keys=True))
    else:
        click.echo(f"export GCL_LEASE_ID={info.lease_id}")
        click.echo(f"export GCL_LEASE_SECRET={lease.secret}")
    click.echo(
        f"gcl acquire: holding {info.occupy} slot(s) on {', '.join(info.names)} until "
        f"{fmt.clock_time(expires_at, date=True)} (ttl {fmt.duration(info.ttl)}, not renewed); "
        f"end it with `gcl release {info.lease_id}` and the secret",
        err=True,
    )


@click.command("release", short_help="End a lease from `gcl acquire` (needs its secret).")
@click.argument("lease_id", required=False, envvar="GCL_LEASE_ID")
@click.option(
    "--secret",
    envvar="GCL_LEASE_SECRET",
    default=None,
    help="The lease's secret [env GCL_LEASE_SECRET; else read from the JSON on stdin]",
)
@click.pass_context
def release_command(ctx: click.Context, lease_id: str | None, secret: str | None) -> int:
    """End a lease taken with `gcl acquire` and free its slots.

    LEASE_ID and the secret come from the arguments, from GCL_LEASE_ID and GCL_LEASE_SECRET
    (as `eval "$(gcl acquire ...)"` sets them), or from the JSON `gcl acquire --json` printed,
    on stdin: `gcl release < lease.json`. Prefer the environment or stdin for the secret:
    command lines show in `ps`.
    """
    if lease_id is None or secret is None:
        lease_id, secret = _from_stdin(lease_id, secret)
    try:
        held = HeldLease(lease_id=lease_id, secret=secret)
    except ValidationError as exc:
        problem = exc.errors(include_url=False, include_input=False)[0]
        field = ".".join(str(part) for part in problem["loc"])
        raise click.UsageError(
            f"{field} is not one `gcl acquire` printed: {problem['msg']}"
        ) from None
    settings = _worker_settings(ctx)

    async def release() -> bool:
        nc = await connect(settings, "gcl-release")
        try:
            return (await Rpc(nc, settings).call(RELEASE, held)).released
        finally:
            await nc.close()

    if asyncio.run(release()):
        click.echo(f"released lease {lease_id}: its slots are free now")
    else:
        click.echo(f"lease {lease_id} was already released")
    return 0


def _from_stdin(lease_id: str | None, secret: str | None) -> tuple[str, str]:
    """Fill what is missing from the JSON `gcl acquire --json` printed, piped to stdin."""
    stream = sys.stdin
    if stream is None or stream.isatty():
        raise click.UsageError(
            "give LEASE_ID and --secret (or GCL_LEASE_ID and GCL_LEASE_SECRET), or pipe the "
            "JSON of `gcl acquire --json` to stdin"
        )
    text = stream.read()
    try:
        record = json.loads(text)
        found_id, found_secret = record["lease_id"], record["secret"]
    except (ValueError, TypeError, KeyError):
        raise click.UsageError(
            "stdin is not the JSON of `gcl acquire --json` (with lease_id and secret)"
        ) from None
    if lease_id is not None and lease_id != found_id:
        raise click.UsageError(f"LEASE_ID {lease_id} is not the lease on stdin ({found_id})")
    return str(found_id), str(secret or found_secret)


COMMANDS = (run_command, acquire_command, release_command)
