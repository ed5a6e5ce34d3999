"""`gcl leases` and `gcl revoke`: see who holds slots, and take them back from a stuck holder."""

from __future__ import annotations

import click

from gcl.cli import output
from gcl.cli.limits import JSON, open_admin


@click.command(short_help="List live leases, on all limits or on one.")
@click.argument("name", required=False)
@JSON
@click.pass_context
def leases(ctx: click.Context, name: str | None, as_json: bool) -> None:
    """List live leases, oldest first; NAME keeps those on one limit."""
    with open_admin(ctx) as admin:
        found = admin.list_leases(name)
    if as_json:
        output.emit_json(found)
    else:
        output.leases_table(found)


@click.command(short_help="End a lease now and free its slots.")
@click.argument("lease_id")
@click.pass_context
def revoke(ctx: click.Context, lease_id: str) -> None:
    """End a lease now and free its slots (find ids with `gcl leases` or `gcl inspect NAME`).

    The holder's block keeps running but raises LeaseLost when it exits, so use this for
    holders that hang or died without releasing.
    """
    with open_admin(ctx) as admin:
        revoked = admin.revoke_lease(lease_id)
    click.echo(f"revoked lease {revoked.lease_id}: its slots are free now")


COMMANDS = (leases, revoke)
