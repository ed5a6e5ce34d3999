"""`gcl create|ls|inspect|update|delete`: manage limits, with the words of `prefect gcl`.

A name containing `{worker_id}` is a template: each worker's first acquire of its own name
(`gpu:gpu-7` under `gpu:{worker_id}`) creates that worker's limit from it.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
from pydantic import ValidationError

from gcl.cli import output
from gcl.protocol import MAX_SLOTS, LimitInfo
from gcl.protocol.names import TEMPLATE_FIELD
from gcl.sdk import format as fmt
from gcl.sdk.admin import AdminClient
from gcl.sdk.exceptions import LimitExists
from gcl.sdk.settings import NatsSettings, Role

SLOTS = click.IntRange(0, MAX_SLOTS)
DECAY = click.FloatRange(0, 1e9)
OUTPUT = click.Choice(["table", "json"])


def JSON(command: Callable[..., Any]) -> Callable[..., Any]:
    """`--json`, `-o json` and `--output json` (Prefect's spelling) all print JSON for scripts."""

    @functools.wraps(command)
    def folded(*args: Any, as_json: bool, output_format: str | None, **kwargs: Any) -> Any:
        return command(*args, as_json=as_json or output_format == "json", **kwargs)

    folded = click.option(
        "--output", "-o", "output_format", type=OUTPUT, default=None, help="table or json"
    )(folded)
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts")(folded)


def nats_settings(ctx: click.Context, role: Role = "operator") -> NatsSettings:
    """NATS settings from the group's flags; credentials and TLS come from GCL_* variables,
    else from the credential `gcl up` made for `role` (GCL_NATS_ROLE picks another)."""
    obj = ctx.find_root().obj or {}
    try:
        return role_settings(obj["nats_url"], obj["prefix"], role)
    except ValidationError as exc:
        problem = exc.errors()[0]
        field = ".".join(str(p) for p in problem["loc"])
        raise click.UsageError(f"{field}: {problem['msg']}") from None


def role_settings(nats_url: str, prefix: str, role: Role) -> NatsSettings:
    """Settings for a command acting as `role`, unless GCL_NATS_ROLE says otherwise."""
    chosen = os.environ.get("GCL_NATS_ROLE") or role
    return NatsSettings(nats_url=nats_url, prefix=prefix, nats_role=chosen)


@contextmanager
def open_admin(ctx: click.Context) -> Iterator[AdminClient]:
    with AdminClient(nats_settings(ctx)) as admin:
        yield admin


def _describe(info: LimitInfo) -> str:
    state = "active" if info.active else "inactive (records leases, never blocks)"
    decay = (
        f", slots decay at {fmt.rate(info.slot_decay_per_second)}"
        if info.slot_decay_per_second
        else ""
    )
    if info.is_template:
        return (
            f"template {info.name!r}: each worker's first acquire of its own name creates a "
            f"limit of {info.limit} slot(s){decay}, {state}"
        )
    return f"limit {info.name!r}: {fmt.occupancy(info.occupied, info.limit)} slots{decay}, {state}"


@click.command(short_help="Create a limit, or a per-worker template.")
@click.argument("name")
@click.option("--limit", "-l", type=SLOTS, required=True, help="Number of slots")
@click.option(
    "--slot-decay-per-second",
    type=DECAY,
    default=0.0,
    show_default=True,
    help="Slots freed per second: a rate limit (0: slots free only at release)",
)
@click.option("--disable", is_flag=True, help="Create inactive: leases are recorded, never blocked")
@click.option(
    "--if-not-exists",
    is_flag=True,
    help="Succeed, unchanged, when the limit already exists (for provisioning scripts)",
)
@click.pass_context
def create(
    ctx: click.Context,
    name: str,
    limit: int,
    slot_decay_per_second: float,
    disable: bool,
    if_not_exists: bool,
) -> None:
    """Create a limit. A NAME containing {worker_id}, like 'gpu:{worker_id}', is a template:
    each worker gets its own limit of that size on its first acquire.
    """
    with open_admin(ctx) as admin:
        try:
            info = admin.create_limit(
                name, limit, active=not disable, slot_decay_per_second=slot_decay_per_second
            )
        except LimitExists:
            if not if_not_exists:
                raise
            click.echo(f"limit {name!r} already exists; left unchanged")
            return
    click.echo(f"created {_describe(info)}")
    if TEMPLATE_FIELD not in name and "{" in name:
        click.echo(f"note: only {TEMPLATE_FIELD} makes a template", err=True)


@click.command(name="ls")
@click.argument("pattern", required=False)
@JSON
@click.pass_context
def ls(ctx: click.Context, pattern: str | None, as_json: bool) -> None:
    """List limits and templates, with occupancy. PATTERN filters names: 'gpu:*'."""
    with open_admin(ctx) as admin:
        limits = admin.list_limits(pattern)
    if as_json:
        output.emit_json(limits)
    else:
        output.limits_table(limits)


@click.command(short_help="Show a limit's figures, holders and waiting queue.")
@click.argument("name")
@JSON
@click.pass_context
def inspect(ctx: click.Context, name: str, as_json: bool) -> None:
    """Show a limit's figures, who holds its slots and who waits, in queue order."""
    with open_admin(ctx) as admin:
        detail = admin.get_limit(name)
    if as_json:
        output.emit_json(detail)
    else:
        output.detail(detail)


@click.command()
@click.argument("name")
@click.option("--limit", "-l", type=SLOTS, default=None, help="New number of slots")
@click.option("--slot-decay-per-second", type=DECAY, default=None, help="New decay rate")
@click.option(
    "--enable/--disable",
    "active",
    default=None,
    help="Enforce the limit, or only record leases against it",
)
@click.pass_context
def update(
    ctx: click.Context,
    name: str,
    limit: int | None,
    slot_decay_per_second: float | None,
    active: bool | None,
) -> None:
    """Change a limit or a template. Changing a template affects workers' limits created
    after the change; each existing limit is updated on its own.
    """
    if limit is None and slot_decay_per_second is None and active is None:
        raise click.UsageError(
            "nothing to change: pass --limit N, --slot-decay-per-second X, --enable or --disable"
        )
    with open_admin(ctx) as admin:
        info = admin.update_limit(
            name, limit=limit, active=active, slot_decay_per_second=slot_decay_per_second
        )
    click.echo(f"updated {_describe(info)}")


@click.command(short_help="Enforce a limit again (like `update NAME --enable`).")
@click.argument("name")
@click.pass_context
def enable(ctx: click.Context, name: str) -> None:
    """Enforce a limit or template again: acquires wait for free slots."""
    with open_admin(ctx) as admin:
        info = admin.update_limit(name, active=True)
    click.echo(f"enabled {_describe(info)}")


@click.command(short_help="Stop enforcing a limit; leases are still recorded.")
@click.argument("name")
@click.pass_context
def disable(ctx: click.Context, name: str) -> None:
    """Stop enforcing a limit or template: acquires are granted at once and still recorded,
    so `gcl ls` shows how often callers would have waited (a dry run of a new limit).
    """
    with open_admin(ctx) as admin:
        info = admin.update_limit(name, active=False)
    click.echo(f"disabled {_describe(info)}")


@click.command(short_help="Delete a limit or template (asks if slots are held).")
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Do not ask, even when slots are held")
@click.pass_context
def delete(ctx: click.Context, name: str, yes: bool) -> None:
    """Delete a limit or template. Asks first when slots are held: their holders lose
    their leases (LeaseLost at the end of their block).
    """
    with open_admin(ctx) as admin:
        info = admin.get_limit(name).limit
        if info.leases and not yes:
            _confirm_delete(info)
        deleted = admin.delete_limit(name)
    note = f"; {deleted.released_leases} lease(s) revoked" if deleted.released_leases else ""
    click.echo(f"deleted {name!r}{note}")


def _confirm_delete(info: LimitInfo) -> None:
    """Ask on a terminal; with no answer to read, refuse rather than guess."""
    question = (
        f"{info.name!r} has {info.leases} lease(s) holding "
        f"{fmt.occupancy(info.held, info.limit)} slots; delete it and revoke them?"
    )
    refusal = f"not deleted: pass --yes to delete {info.name!r} while its slots are held"
    if sys.stdin is None or sys.stdin.closed:
        raise click.ClickException(refusal)
    try:
        answer = click.confirm(question, default=False)
    except click.Abort:
        click.echo("", err=True)
        raise click.ClickException(refusal) from None
    if not answer:
        raise click.ClickException(f"not deleted: {info.name!r} kept")


COMMANDS = (create, ls, inspect, update, enable, disable, delete)
