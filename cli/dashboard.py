"""`gcl dashboard`: the Textual operator dashboard (Textual is imported only when it runs)."""

from __future__ import annotations

import click


@click.command()
@click.option("--read-only", is_flag=True, help="Disable every action that changes something")
@click.pass_context
def dashboard(ctx: click.Context, read_only: bool) -> None:
    """Watch limits live and edit them (needs a running coordinator: `gcl up`)."""
    raise click.ClickException("the dashboard is not built yet")
