"""`gcl auth init`: the NATS users, permissions and credential files of a deployment.

NATS enforces gcl's roles (docs/security.md); this command writes what it needs:

    <out>/gcl-auth.conf       the `authorization` block: one user per role (and per worker
                              machine with --worker), least-privilege permissions
    <out>/nats-server.conf    a whole server configuration that includes it (JetStream on)
    <out>/<role>.env          one credential per user, for GCL_NATS_CREDENTIALS

Every file is readable by its owner only. Hand each machine only the credential of its role.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from gcl.coordinator.nats_auth import (
    Credential,
    authorization,
    default_credentials,
    new_credential,
    write_private,
)
from gcl.protocol import MAX_PAYLOAD
from gcl.sdk.discovery import AUTH_DIR, data_dir


@click.group(short_help="Write NATS users and credentials for gcl's roles.")
def auth() -> None:
    """NATS users, permissions and credentials for gcl's roles (see docs/security.md)."""


@auth.command(short_help="Write a NATS configuration and one credential per role.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder to write into [default: <data-dir>/auth]",
)
@click.option(
    "--worker",
    "workers",
    multiple=True,
    metavar="NAME",
    help="Also a worker user of its own for this machine (its own inbox); repeatable",
)
@click.option("--listen", default="0.0.0.0:4222", show_default=True, help="NATS client address")
@click.option(
    "--max-payload", default=MAX_PAYLOAD, show_default=True, help="Largest message, bytes"
)
@click.option("--force", is_flag=True, help="Replace existing credentials (rotates them all)")
@click.pass_context
def init(
    ctx: click.Context,
    out: Path | None,
    workers: tuple[str, ...],
    listen: str,
    max_payload: int,
    force: bool,
) -> None:
    """Write the NATS users of a deployment and a credential file for each.

    \b
    Then:  nats-server -c <out>/nats-server.conf     (or include gcl-auth.conf in yours)
           coordinator:  GCL_NATS_CREDENTIALS=<out>/coordinator.env gcl serve ...
           workers:      GCL_NATS_CREDENTIALS=<out>/worker.env (or worker-<NAME>.env)
           operators:    GCL_NATS_CREDENTIALS=<out>/operator.env gcl ls
           dashboards in --read-only mode and `gcl alert`: observer.env
    Re-running refuses to overwrite credentials unless --force (which rotates them: reload
    NATS with `nats-server --signal reload` and hand out the new files).
    """
    folder = out or data_dir() / AUTH_DIR
    conf = folder / "gcl-auth.conf"
    if conf.exists() and not force:
        raise click.ClickException(
            f"{conf} exists: pass --force to rotate every credential, or use another --out"
        )
    prefix: str = ctx.find_root().obj["prefix"]
    try:
        credentials = default_credentials()
        credentials += [new_credential("worker", f"worker-{name}") for name in workers]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--worker") from None
    block = authorization(credentials, prefix)
    write_private(conf, "authorization: " + json.dumps(block, indent=2) + "\n")
    server = (
        f"# nats-server configuration for gcl (prefix {prefix!r}); written by `gcl auth init`\n"
        f"listen: {json.dumps(listen)}\n"
        f"max_payload: {max_payload}\n"
        "jetstream: { store_dir: /data }\n"
        "include gcl-auth.conf\n"
    )
    write_private(folder / "nats-server.conf", server)
    for credential in credentials:
        write_private(folder / _file_name(credential), credential.env_lines())
    click.echo(f"wrote {folder}/: nats-server.conf, gcl-auth.conf and credentials:")
    for credential in credentials:
        click.echo(f"  {_file_name(credential):24} user {credential.user} ({credential.role})")


def _file_name(credential: Credential) -> str:
    if credential.role == "worker" and credential.user.startswith("worker-"):
        return f"{credential.user}.env"
    return f"{credential.role}.env"


COMMANDS = (auth,)
