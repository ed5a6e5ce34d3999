"""`gcl events`: read what the coordinator did, as lines for people or JSON for scripts."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

import click

from gcl.cli.limits import JSON, nats_settings
from gcl.protocol import EVENT_KINDS, Event, LimitInfo
from gcl.sdk import format as fmt
from gcl.sdk.events import events as event_stream
from gcl.sdk.events import parse_duration
from gcl.sdk.exceptions import InvalidRequest
from gcl.sdk.settings import NatsSettings

DEFAULT_SINCE = "10m"


def resolve_kinds(words: Iterable[str]) -> list[str]:
    """`lease.expired`, `expired` (a unique suffix) or `lease` (a group) -> full kinds."""
    kinds: list[str] = []
    for word in words:
        found = [k for k in EVENT_KINDS if word in (k, k.split(".", 1)[1], k.split(".", 1)[0])]
        if not found:
            raise click.BadParameter(
                f"unknown event kind {word!r}: choose from {', '.join(EVENT_KINDS)} "
                "(or their last part, e.g. expired, or a group: limit, lease, waiter)",
                param_hint="--kind",
            )
        kinds.extend(k for k in found if k not in kinds)
    return kinds


def format_event(event: Event) -> str:
    """One line: local time, kind, the limits' figures, the holder, the lease, the reason."""
    parts = [fmt.clock_time(event.at, date=True, millis=True), f"{event.kind:<18}"]
    figures = {info.name: info for info in event.limits}
    parts.append("  ".join(_figure(name, figures.get(name)) for name in event.names) or "-")
    who = fmt.holder(event.holder, unknown="")
    if who:
        parts.append(who)
    if event.lease_id:
        parts.append(f"lease {event.lease_id[:12]}")
    if event.reason:
        parts.append(event.reason)
    return "  ".join(parts)


def _figure(name: str, info: LimitInfo | None) -> str:
    if info is None:
        return name
    occupied = fmt.occupancy(info.occupied, info.limit)
    waiting = f" ({info.waiters} waiting)" if info.waiters else ""
    off = " (dry-run)" if not info.active else ""
    return f"{name} {occupied}{waiting}{off}"


async def _show(
    settings: NatsSettings,
    kinds: list[str],
    names: list[str],
    durable: str | None,
    since: str | None,
    follow: bool,
    as_json: bool,
) -> int:
    shown = 0
    stream = event_stream(
        kinds or None, names or None, settings, durable=durable, since=since, follow=follow
    )
    async with contextlib.aclosing(stream) as source:
        async for event in source:
            click.echo(event.model_dump_json() if as_json else format_event(event))
            shown += 1
    return shown


@click.command()
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events until Ctrl-C.")
@click.option(
    "--since",
    metavar="DURATION",
    default=None,
    help="Start this long ago: 90s, 10m, 2h, 1d (needs JetStream). "
    f"[default: {DEFAULT_SINCE} without --follow; live only with --follow]",
)
@click.option(
    "--kind",
    "kinds",
    multiple=True,
    metavar="KIND",
    help="Only this kind; repeatable. Full (lease.expired), short (expired) or a group (lease).",
)
@click.option(
    "--name",
    "names",
    multiple=True,
    metavar="PATTERN",
    help="Only events on limits matching this pattern (gpu:*); repeatable.",
)
@click.option(
    "--durable",
    metavar="NAME",
    default=None,
    help="Resume where the last run with this NAME stopped (a consumer kept by NATS).",
)
@JSON
@click.pass_context
def events(
    ctx: click.Context,
    follow: bool,
    since: str | None,
    kinds: tuple[str, ...],
    names: tuple[str, ...],
    durable: str | None,
    as_json: bool,
) -> None:
    """Print the coordinator's events: grants, releases, expiries, changes to limits.

    \b
    gcl events                       the last 10 minutes, then exit
    gcl events -f                    live, until Ctrl-C
    gcl events -f --since 1h --kind expired --name 'gpu:*'
    gcl events --json | jq .         for scripts
    """
    if since is not None:
        try:
            parse_duration(since)
        except InvalidRequest as exc:
            raise click.BadParameter(str(exc), param_hint="--since") from None
    elif not follow and durable is None:
        since = DEFAULT_SINCE
    settings = nats_settings(ctx, "observer")
    run = _show(settings, resolve_kinds(kinds), list(names), durable, since, follow, as_json)
    try:
        shown = asyncio.run(run)
    except KeyboardInterrupt:
        return  # Ctrl-C is how a --follow ends: not an error
    if not shown and not follow and not as_json:
        click.echo(f"no matching events {f'in the last {since}' if since else 'yet'}.", err=True)
