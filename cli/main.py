"""The `gcl` command: run the service, manage limits, watch events."""

from __future__ import annotations

import sys

import click

from cli.config import resolve_nats_url
from cli.dashboard import dashboard
from cli.service import serve, up
from sdk.exceptions import CoordinatorUnavailable, GCLError


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
@click.version_option("0.1.0", prog_name="gcl")
@click.pass_context
def cli(ctx: click.Context, nats_url: str | None, prefix: str) -> None:
    """gcl: global concurrency limits for Python workers, coordinated over NATS.

    \b
    Start here:   gcl up             (NATS + coordinator on a SQLite file, in ./.gcl)
    Production:   gcl serve --db postgresql+psycopg://user@host/db
    Exit codes:   0 ok, 1 user error, 2 coordinator or NATS unreachable.
    """
    ctx.ensure_object(dict)
    ctx.obj["nats_url"] = resolve_nats_url(nats_url)
    ctx.obj["prefix"] = prefix


cli.add_command(up)
cli.add_command(serve)
cli.add_command(dashboard)


def main() -> None:
    try:
        cli(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted.", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(1)
    except CoordinatorUnavailable as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except GCLError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
