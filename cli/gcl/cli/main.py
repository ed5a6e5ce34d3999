"""The `gcl` command: run the service, manage limits, watch events."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import click

from gcl.cli import auth, leases, limits, output, worker
from gcl.cli.alert import alert
from gcl.cli.config import resolve_nats_url
from gcl.cli.dashboard import dashboard
from gcl.cli.events import events
from gcl.cli.limits import JSON
from gcl.cli.service import serve, up
from gcl.coordinator.store import Deposed
from gcl.sdk.admin import AdminClient
from gcl.sdk.exceptions import CoordinatorUnavailable, GCLError, StorageError
from gcl.sdk.version import VERSION

EXIT_OK = 0
EXIT_USER_ERROR = 1
EXIT_UNAVAILABLE = 2
EXIT_DEPOSED = 4  # another coordinator took the lead: restart this one, as a standby
EXIT_STORAGE = 3
EXIT_INTERRUPTED = 130


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--nats",
    "nats_url",
    default=None,
    metavar="URL",
    help="NATS URL [env GCL_NATS_URL; else the one `gcl up` announced in ./.gcl; "
    "else nats://127.0.0.1:4222]",
)
@click.option(
    "--prefix",
    envvar="GCL_PREFIX",
    default="gcl",
    show_default=True,
    help="Subject prefix, to run several deployments on one NATS [env GCL_PREFIX]",
)
@click.option(
    "--credentials",
    type=click.Path(exists=True, dir_okay=False, readable=True),
    default=None,
    metavar="FILE",
    help="A role's credential file from `gcl auth init` [env GCL_NATS_CREDENTIALS; else the "
    "role's own from `gcl up` in ./.gcl]",
)
@click.option(
    "--role",
    type=click.Choice(["operator", "observer", "worker", "coordinator"]),
    default=None,
    help="Which of `gcl up`'s credentials to use, instead of the command's own choice "
    "[env GCL_NATS_ROLE]",
)
@click.version_option(VERSION, prog_name="gcl")
@click.pass_context
def cli(
    ctx: click.Context,
    nats_url: str | None,
    prefix: str,
    credentials: str | None,
    role: str | None,
) -> None:
    """gcl: global concurrency limits for Python workers, coordinated over NATS.

    \b
    Start here:   gcl up             (NATS + coordinator on a SQLite file, in ./.gcl)
    Limits:       gcl create 'gpu:{worker_id}' --limit 2   ·   gcl ls   ·   gcl inspect NAME
    Production:   gcl serve --db postgresql+psycopg://user@host/db
    From shells:  gcl run NAME -- COMMAND   (a global flock: waits, runs, releases)
                  gcl acquire NAME --ttl 2h  ·  gcl release   (leases for scripts)
    \b
    Security:     gcl up gives each role a NATS user (.gcl/auth); commands pick theirs
                  (operator; observer for events/alert/--read-only); `gcl auth init`
                  writes them for production (docs/security.md).
    Environment:  GCL_NATS_URL, GCL_PREFIX, GCL_DB_URL (serve/up), GCL_DATA_DIR (up);
                  NATS auth: GCL_NATS_CREDENTIALS (a role's .env file), GCL_NATS_ROLE,
                  GCL_NATS_USER + GCL_NATS_PASSWORD, GCL_NATS_TOKEN, GCL_NATS_CREDS,
                  GCL_NATS_NKEY_SEED, GCL_NATS_INBOX_PREFIX;
                  TLS: GCL_NATS_TLS_CA, GCL_NATS_TLS_CERT, GCL_NATS_TLS_KEY.
    Exit codes:   0 ok (also a clean stop of serve/up by SIGTERM or Ctrl-C);
                  1 user error: bad input or options, a conflict (another coordinator);
                  2 unreachable: NATS, or no coordinator answers;
                  3 storage: the database cannot be opened or keeps failing (serve/up),
                    or the coordinator reports its database unhealthy (ping);
                  4 (serve) another coordinator took the lead: restart it, as a standby;
                75 (run, acquire) the slots could not be had; gcl run otherwise exits
                  with its command's status;
                130 interrupted (Ctrl-C in a command, a second stop signal to serve/up).
    """
    ctx.ensure_object(dict)
    ctx.obj["nats_url"] = resolve_nats_url(nats_url)
    ctx.obj["prefix"] = prefix
    # Flags become the environment every settings object (and child process) of this command
    # reads, so one place decides the credential for all of them.
    if credentials is not None:
        os.environ["GCL_NATS_CREDENTIALS"] = credentials
    if role is not None:
        os.environ["GCL_NATS_ROLE"] = role


@click.command(short_help="Check that a coordinator answers and commits (health checks).")
@click.pass_context
def ping(ctx: click.Context) -> None:
    """Check that a coordinator answers and its database commits: for health checks.

    Exit 0 when healthy; 2 when no coordinator answers; 3 when it answers but its database
    is failing or stalled (a change has waited over its store_stall_seconds to commit).
    """
    with limits.open_admin(ctx) as admin:
        pong = admin.ping()
    url = ctx.find_root().obj["nats_url"]
    if not pong.store.healthy:
        raise StorageError(
            f"coordinator {pong.coordinator_id} answers on {url}, but its database is "
            f"unhealthy: {pong.store.problem}"
        )
    click.echo(f"coordinator {pong.coordinator_id} (v{pong.version}) answers on {url}")


@click.command(short_help="Which coordinator leads, its epoch, and the standbys.")
@JSON
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Every coordinator on this prefix: the leader (with its epoch) and the hot standbys.

    Exits 2 when none answers, or when standbys answer but none leads.
    """
    with AdminClient(limits.nats_settings(ctx, "observer")) as admin:
        found = admin.status()
    if as_json:
        output.emit_json(found)
    else:
        output.coordinators_table(found)
    if not found:
        raise CoordinatorUnavailable(
            "no coordinator answered: start one with `gcl up` or `gcl serve`"
        )
    if not any(s.role == "leader" for s in found):
        raise CoordinatorUnavailable(
            f"{len(found)} coordinator(s) answer but none leads: a failover may be under way, "
            "or the standbys cannot reach the database"
        )


for command in (
    up,
    serve,
    dashboard,
    ping,
    status,
    events,
    alert,
    *limits.COMMANDS,
    *leases.COMMANDS,
    *worker.COMMANDS,
    *auth.COMMANDS,
):
    cli.add_command(command)


def run(args: Sequence[str] | None = None) -> int:
    """Run the command and map what went wrong to an exit code and a one-line message."""
    argv = list(args) if args is not None else None
    try:
        result = cli.main(args=argv, prog_name="gcl", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted.", err=True)
        return EXIT_USER_ERROR
    except click.UsageError as exc:
        hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
        click.echo(f"error: {exc.format_message()}{hint}", err=True)
        return EXIT_USER_ERROR
    except click.ClickException as exc:
        exc.show()
        return EXIT_USER_ERROR
    except CoordinatorUnavailable as exc:
        click.echo(f"error: {exc}", err=True)
        return EXIT_UNAVAILABLE
    except Deposed as exc:
        click.echo(f"error: {exc}; restart it and it stands by", err=True)
        return EXIT_DEPOSED
    except StorageError as exc:
        click.echo(f"error: {exc}", err=True)
        return EXIT_STORAGE
    except GCLError as exc:
        click.echo(f"error: {exc}", err=True)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return result if isinstance(result, int) else EXIT_OK


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
