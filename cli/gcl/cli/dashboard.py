"""`gcl dashboard`: the Textual operator dashboard (Textual is imported only when it runs)."""

from __future__ import annotations

import click

from gcl.cli.limits import nats_settings


@click.command()
@click.option("--read-only", is_flag=True, help="Disable every action that changes something")
@click.pass_context
def dashboard(ctx: click.Context, read_only: bool) -> None:
    """Watch limits live and edit them (needs a running coordinator: `gcl up`).

    Keys are in the footer; `?` lists them all, ctrl+p finds any action by name.
    """
    settings = nats_settings(ctx, "observer" if read_only else "operator")
    from gcl.tui import run_dashboard  # Textual loads only here, never for other commands

    run_dashboard(settings, read_only=read_only)
