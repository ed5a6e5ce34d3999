"""`gcl alert`: run the alerter on a rules file until Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING

import click

from gcl.cli.limits import nats_settings

if TYPE_CHECKING:  # imported by the command when it runs: not by every other `gcl` command
    from gcl.alerting.rules import RuleFile
    from gcl.alerting.runner import Alerter


def _describe(rules: RuleFile) -> str:
    lines = [f"{len(rules.rule)} rule(s):"]
    for rule in rules.rule:
        lines.append(
            f"  {rule.name}: {rule.kind} on {', '.join(rule.limits)} -> {', '.join(rule.actions)}"
        )
    return "\n".join(lines)


async def _run(alerter: Alerter, banner: str) -> None:
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, task.cancel)  # type: ignore[union-attr]
    with contextlib.suppress(asyncio.CancelledError):
        await alerter.run(lambda: click.echo(banner, err=True))
    click.echo("alerter stopped.", err=True)


@click.command()
@click.option(
    "--rules",
    "rules_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML rules file (see docs/events.md).",
)
@click.option(
    "--durable",
    metavar="NAME",
    default=None,
    help="Read the stored event stream under this consumer name: after a restart, alert on "
    "what happened while the alerter was down.",
)
@click.option("--check", is_flag=True, help="Only check the rules file, then exit.")
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
@click.pass_context
def alert(
    ctx: click.Context, rules_path: Path, durable: str | None, check: bool, log_level: str
) -> None:
    """Watch the events and alert: crashed holders, saturated limits, long waits, denials.

    Each rule fires once when its condition starts and once when it clears. Actions: a log
    line (default), a command with the alert as JSON on stdin, or a webhook POST.
    """
    from gcl.alerting.rules import load_rules
    from gcl.alerting.runner import Alerter

    rules = load_rules(rules_path)
    if check:
        click.echo(f"{rules_path}: ok\n{_describe(rules)}")
        return
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = nats_settings(ctx, "observer")
    banner = f"alerting on {settings.nats_url} ({_describe(rules)})\nCtrl-C stops it."
    asyncio.run(_run(Alerter(rules, settings, durable=durable), banner))
