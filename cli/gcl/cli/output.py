"""How the CLI prints: aligned tables for people, `--json` for scripts.

Tables go through rich so columns line up; when stdout is not a terminal (a pipe, a test) the
width is fixed wide so rows are never wrapped mid-cell and `grep` sees one row per line. rich is
imported when a table is printed, not with the module: `gcl serve` never prints one.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click
from pydantic import BaseModel

from gcl.protocol import CoordinatorStatus, LeaseInfo, LimitDetail, LimitInfo, WaiterInfo
from gcl.protocol.names import TEMPLATE_FIELD
from gcl.sdk import format as fmt

if TYPE_CHECKING:
    from rich.console import Console

BAR_WIDTH = 10
PIPE_WIDTH = 250


def console() -> Console:
    """A console on the current stdout (looked up per call: tests swap sys.stdout)."""
    from rich.console import Console

    stream = sys.stdout
    width = None if stream.isatty() else PIPE_WIDTH
    return Console(file=stream, width=width, highlight=False, soft_wrap=False)


def emit_json(data: BaseModel | Sequence[BaseModel] | dict[str, Any]) -> None:
    """Print JSON for scripts: the wire models, as the admin API returns them."""
    if isinstance(data, BaseModel):
        payload: Any = data.model_dump(mode="json")
    elif isinstance(data, dict):
        payload = data
    else:
        payload = [item.model_dump(mode="json") for item in data]
    click.echo(json.dumps(payload, indent=2, sort_keys=True))


def bar(used: float, total: float) -> str:
    """`███████░░░` in whole cells: plain enough for pipes and `grep`."""
    return fmt.bar(used, total, width=BAR_WIDTH, eighths=False)


def print_table(
    columns: Sequence[str], rows: Sequence[Sequence[str]], title: str = "", header: bool = True
) -> None:
    from rich import box
    from rich.table import Table

    table = Table(
        box=box.SIMPLE_HEAD,
        show_header=header,
        title=title or None,
        title_justify="left",
        show_edge=False,
        pad_edge=False,
    )
    for column in columns:
        table.add_column(column, no_wrap=True)
    for row in rows:
        table.add_row(*row)
    console().print(table)


def kind(info: LimitInfo) -> str:
    return "template" if info.is_template else "limit"


def limits_table(limits: Sequence[LimitInfo]) -> None:
    if not limits:
        click.echo("no limits yet: create one with `gcl create NAME --limit N`")
        return
    columns = ["NAME", "KIND", "ACTIVE", "SLOTS", "", "DECAY/S", "LEASES", "WAITING", "DENIED"]
    rows = [
        [
            info.name,
            kind(info),
            "yes" if info.active else "no",
            "-" if info.is_template else fmt.occupancy(info.occupied, info.limit),
            f"{info.limit} per worker" if info.is_template else bar(info.occupied, info.limit),
            fmt.number(info.slot_decay_per_second),
            str(info.leases),
            str(info.waiters),
            str(info.denied),
        ]
        for info in limits
    ]
    print_table(columns, rows)


def limit_figures(info: LimitInfo) -> None:
    """The key/value block at the top of `gcl inspect`."""
    lines = _template_lines(info) if info.is_template else _limit_lines(info)
    lines.append(("created", fmt.clock_time(info.created_at, date=True)))
    lines.append(("updated", fmt.clock_time(info.updated_at, date=True)))
    print_table(["FIELD", "VALUE"], [[f"{key}:", value] for key, value in lines], header=False)


def _limit_lines(info: LimitInfo) -> list[tuple[str, str]]:
    return [
        ("name", info.name),
        ("kind", "limit"),
        ("active", "yes" if info.active else "no (leases are recorded, never blocked)"),
        ("slots", f"{fmt.occupancy(info.occupied, info.limit)}  {bar(info.occupied, info.limit)}"),
        ("held by leases", str(info.held)),
        ("slot decay/s", fmt.number(info.slot_decay_per_second)),
        ("leases", str(info.leases)),
        ("waiting", str(info.waiters)),
        ("denied", str(info.denied)),
        ("avg hold", fmt.duration(info.avg_occupancy_seconds)),
        ("fencing token", str(info.fencing_token)),
    ]


def _template_lines(info: LimitInfo) -> list[tuple[str, str]]:
    example = info.name.replace(TEMPLATE_FIELD, "<WORKER_ID>")
    return [
        ("name", info.name),
        ("kind", f"template: a worker's first acquire of {example} creates its own limit"),
        ("slots per worker", str(info.limit)),
        ("active", "yes" if info.active else "no (leases are recorded, never blocked)"),
        ("slot decay/s", fmt.number(info.slot_decay_per_second)),
        ("see them", f"gcl ls '{info.name.replace(TEMPLATE_FIELD, '*')}'"),
    ]


def expires(lease: LeaseInfo) -> str:
    """`29s`, or `29d23h (long-lived)` for a lease nobody renews (`gcl acquire`)."""
    left = fmt.duration(lease.expires_in)
    return f"{left} (long-lived)" if lease.long_lived else left


def holders_table(holders: Sequence[LeaseInfo], name: str) -> None:
    if not holders:
        click.echo("holders: none")
        return
    columns = ["LEASE", "WORKER", "HOST", "PID", "LABEL", "OCCUPY", "HELD FOR", "EXPIRES IN"]
    columns.append("FENCING")
    rows = [
        [
            lease.lease_id,
            lease.holder.worker_id,
            lease.holder.host,
            str(lease.holder.pid),
            lease.holder.label,
            str(lease.occupy),
            fmt.since(lease.granted_at),
            expires(lease),
            str(lease.fencing_tokens.get(name, "")),
        ]
        for lease in holders
    ]
    print_table(columns, rows, title=f"holders ({len(holders)})")


def waiters_table(waiters: Sequence[WaiterInfo]) -> None:
    if not waiters:
        click.echo("waiting: none")
        return
    columns = ["#", "REQUEST", "WORKER", "HOST", "PID", "LABEL", "OCCUPY", "WAITED", "LIMITS"]
    rows = [
        [
            str(waiter.position + 1),
            waiter.request_id,
            waiter.holder.worker_id,
            waiter.holder.host,
            str(waiter.holder.pid),
            waiter.holder.label,
            str(waiter.occupy),
            fmt.duration(waiter.waited_seconds),
            ", ".join(waiter.names),
        ]
        for waiter in waiters
    ]
    print_table(columns, rows, title=f"waiting queue ({len(waiters)})")


def detail(detail: LimitDetail) -> None:
    limit_figures(detail.limit)
    if detail.limit.is_template:
        return
    holders_table(detail.holders, detail.limit.name)
    waiters_table(detail.waiters)


def leases_table(leases: Sequence[LeaseInfo]) -> None:
    if not leases:
        click.echo("no leases held")
        return
    columns = ["LEASE", "LIMITS", "OCCUPY", "WORKER", "HOST", "PID", "LABEL", "HELD FOR"]
    columns += ["EXPIRES IN", "FENCING"]
    rows = [
        [
            lease.lease_id,
            ", ".join(lease.names),
            str(lease.occupy),
            lease.holder.worker_id,
            lease.holder.host,
            str(lease.holder.pid),
            lease.holder.label,
            fmt.since(lease.granted_at),
            expires(lease),
            ", ".join(f"{n}={t}" for n, t in lease.fencing_tokens.items()),
        ]
        for lease in leases
    ]
    print_table(columns, rows)


def coordinators_table(found: Sequence[CoordinatorStatus]) -> None:
    """`gcl status`: the leader first, then the standbys."""
    rows = [
        [
            s.coordinator_id,
            s.role,
            "-" if s.epoch is None else str(s.epoch),
            fmt.since(s.since),
            s.host,
            str(s.pid),
            s.version,
        ]
        for s in found
    ]
    print_table(["COORDINATOR", "ROLE", "EPOCH", "FOR", "HOST", "PID", "VERSION"], rows)
