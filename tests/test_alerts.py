"""Alert rules: loading with precise errors, evaluation, actions, and a scripted live scenario."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from gcl.alerting.actions import CommandAction, Dispatcher
from gcl.alerting.alert import Alert
from gcl.alerting.evaluator import Evaluator
from gcl.alerting.rules import ActionSpec, RulesError, parse_rules
from gcl.alerting.runner import Alerter
from gcl.cli.main import run as gcl
from gcl.coordinator.nats_server import NatsServer, free_port
from gcl.protocol import ACQUIRE, AcquireRequest, Event, Holder, LimitInfo
from gcl.sdk.admin import AsyncAdminClient
from gcl.sdk.client import AsyncClient
from gcl.sdk.exceptions import AcquireTimeout
from gcl.sdk.settings import ClientSettings
from gcl.sdk.transport import Rpc
from tests.conftest import wait_until

# --- a webhook receiver on loopback ------------------------------------------------------------


class Receiver:
    """Collects POSTed JSON; answers 503 to the first `failures` requests."""

    def __init__(self, failures: int = 0) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.attempts = 0
        self.failures = failures
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.attempts += 1
                if receiver.attempts <= receiver.failures:
                    self.send_response(503)
                else:
                    receiver.bodies.append(json.loads(data))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def of(self, rule: str) -> list[dict[str, Any]]:
        return [b for b in self.bodies if b["rule"] == rule]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.thread.start()
    yield r
    r.server.shutdown()
    r.server.server_close()


def _recorder(path: Path) -> list[str]:
    """A command that appends its stdin as one line to `path`."""
    code = (
        "import sys, pathlib; pathlib.Path(sys.argv[1]).open('a').write(sys.stdin.read() + '\\n')"
    )
    return [sys.executable, "-c", code, str(path)]


# --- loading rules -----------------------------------------------------------------------------

GOOD = """
[[rule]]
name = "crashed"
kind = "lease_expired"

[[rule]]
name = "slow"
kind = "waiter_waiting"
for_seconds = "2m"
limits = ["gpu:*"]
actions = ["log", "hook"]

[action.hook]
type = "webhook"
url = "http://127.0.0.1:9/x"
"""


def test_a_good_file_loads_with_defaults_and_durations():
    rules = parse_rules(GOOD)
    assert [r.name for r in rules.rule] == ["crashed", "slow"]
    assert rules.rule[0].limits == ["*"] and rules.rule[0].actions == ["log"]
    assert rules.rule[1].for_seconds == 120
    assert [spec.type for _, spec in rules.actions_of(rules.rule[1])] == ["log", "webhook"]


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (
            '[[rule]]\nname = "x"\nkind = "lease_expired"\nthreshold = 3\n',
            ":4: rule 'x' field 'threshold'",
        ),
        (
            '[[rule]]\nname = "x"\nkind = "limit_saturated"\nfor_seconds = "soon"\n',
            ":4: rule 'x' field 'for_seconds'",
        ),
        ('[[rule]]\nname = "x"\nkind = "explosion"\n', ":3: rule 'x' field 'kind'"),
        ('[[rule]]\nname = "x"\nkind = "denial_rate"\n', ":1: rule 'x' field 'per_minute'"),
        ('[[rule]]\nkind = "lease_expired"\n', ":1: rule #1 field 'name'"),
        (
            '[[rule]]\nname = "x"\nkind = "lease_expired"\nactions = ["pager"]\n',
            ":4: rule 'x' field 'actions'",
        ),
        (GOOD + "retries = 99\n", ":16: action 'hook' field 'retries'"),
        (
            '[[rule]]\nname = "x"\nkind = "lease_expired"\n\n[action.h]\ntype = "webhook"\n',
            ":5: action 'h' field 'url'",
        ),
        ('[[rule]]\nname = "x"\nkind = = 3\n', ":3: not valid TOML"),
    ],
)
def test_a_bad_file_names_the_line_and_the_field(text: str, where: str):
    with pytest.raises(RulesError) as caught:
        parse_rules(text, "alerts.toml")
    assert f"alerts.toml{where}" in str(caught.value)


def test_cli_checks_a_rules_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    good = tmp_path / "good.toml"
    good.write_text(GOOD)
    assert gcl(["alert", "--rules", str(good), "--check"]) == 0
    assert "slow: waiter_waiting on gpu:*" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rule]]\nname = "x"\nkind = "limit_saturated"\nfor_seconds = -1\n')
    assert gcl(["alert", "--rules", str(bad), "--check"]) == 1
    assert f"{bad}:4: rule 'x' field 'for_seconds'" in capsys.readouterr().err


# --- evaluation without NATS -------------------------------------------------------------------


def _info(name: str, held: int, limit: int, waiters: int = 0, denied: int = 0) -> LimitInfo:
    return LimitInfo(
        name=name,
        limit=limit,
        active=True,
        slot_decay_per_second=0,
        occupied=held,
        held=held,
        leases=held,
        waiters=waiters,
        denied=denied,
        avg_occupancy_seconds=0,
        fencing_token=0,
        created_at=0,
        updated_at=0,
    )


def _event(kind: str, at: float, info: LimitInfo, **fields: Any) -> Event:
    return Event(kind=kind, at=at, names=[info.name], limits=[info], **fields)  # type: ignore[arg-type]


def test_repeated_expiries_of_one_holder_fire_once_and_clear_once():
    evaluator = Evaluator(
        parse_rules('[[rule]]\nname = "c"\nkind = "lease_expired"\nclear_after_seconds = 10\n').rule
    )
    holder = Holder(worker_id="w1", host="h1")
    alerts = []
    for at in (100.0, 101.0, 105.0):
        alerts += evaluator.feed(_event("lease.expired", at, _info("g", 0, 1), holder=holder))
    alerts += evaluator.advance(114.0)
    assert alerts == [] or [a.state for a in alerts] == ["firing"]
    alerts += evaluator.advance(115.5)
    assert [(a.state, a.at) for a in alerts] == [("firing", 100.0), ("resolved", 115.5)]
    assert alerts[1].figures["expired"] == 3


def test_a_short_saturation_does_not_fire():
    rules = parse_rules('[[rule]]\nname = "s"\nkind = "limit_saturated"\nfor_seconds = 5\n').rule
    evaluator = Evaluator(rules)
    alerts = evaluator.feed(
        _event("waiter.queued", 10.0, _info("g", 1, 1, waiters=1), request_id="r1")
    )
    alerts += evaluator.advance(14.0)
    alerts += evaluator.feed(_event("lease.granted", 14.5, _info("g", 1, 1), request_id="r1"))
    alerts += evaluator.advance(30.0)
    assert alerts == []


def test_a_snapshot_lets_the_alerter_know_old_waiters():
    rules = parse_rules('[[rule]]\nname = "w"\nkind = "waiter_waiting"\nfor_seconds = 60\n').rule
    evaluator = Evaluator(rules)
    from gcl.protocol import WaiterInfo

    waiter = WaiterInfo(
        request_id="r1",
        names=["g"],
        occupy=1,
        mode="concurrency",
        holder=Holder(worker_id="w2"),
        waited_seconds=90,
        position=0,
    )
    evaluator.seed([_info("g", 1, 1, waiters=1)], [waiter], at=1000.0)
    alerts = evaluator.advance(1000.0)
    assert [(a.state, a.since, a.holder.worker_id if a.holder else None) for a in alerts] == [
        ("firing", 910.0, "w2")
    ]


# --- actions -----------------------------------------------------------------------------------


def _alert(state: str = "firing") -> Alert:
    return Alert(
        rule="r",
        kind="lease_expired",
        state=state,
        limit="gpu:1",
        at=2.0,
        since=1.0,  # type: ignore[arg-type]
        summary="test",
        holder=Holder(worker_id="w1", host="h1"),
    )


async def test_command_action_gets_the_alert_as_json_on_stdin(tmp_path: Path):
    out = tmp_path / "got.jsonl"
    action = CommandAction("script", ActionSpec(type="command", command=_recorder(out)))
    await action.send(_alert())
    got = json.loads(out.read_text())
    assert got["rule"] == "r" and got["holder"]["worker_id"] == "w1"
    assert got["state"] == "firing" and got["duration_seconds"] == 1.0 and got["at_iso"]


async def test_a_failing_webhook_never_stops_the_others(receiver: Receiver, caplog):
    dead = f"http://127.0.0.1:{free_port()}/nobody"
    rules = parse_rules(
        f'[[rule]]\nname = "r"\nkind = "lease_expired"\nactions = ["dead", "alive"]\n'
        f'[action.dead]\ntype = "webhook"\nurl = "{dead}"\nretries = 2\nbackoff_seconds = 0.01\n'
        f'[action.alive]\ntype = "webhook"\nurl = "{receiver.url}"\n'
    )
    dispatcher = Dispatcher(rules)
    dispatcher.start()
    dispatcher.submit([_alert("firing"), _alert("resolved")])
    await dispatcher.stop(timeout=20)
    assert [b["state"] for b in receiver.bodies] == ["firing", "resolved"]
    assert "failed after 3 attempt(s)" in caplog.text


async def test_webhook_retries_with_backoff_until_delivered():
    flaky = Receiver(failures=2)
    flaky.thread.start()
    try:
        rules = parse_rules(
            f'[[rule]]\nname = "r"\nkind = "lease_expired"\nactions = ["hook"]\n'
            f'[action.hook]\ntype = "webhook"\nurl = "{flaky.url}"\nbackoff_seconds = 0.05\n'
        )
        dispatcher = Dispatcher(rules)
        dispatcher.start()
        dispatcher.submit([_alert()])
        await dispatcher.stop(timeout=20)
        assert flaky.attempts == 3 and len(flaky.bodies) == 1
    finally:
        flaky.server.shutdown()
        flaky.server.server_close()


# --- the scripted scenario against a real coordinator ------------------------------------------


def _scenario_rules(hook: str, script: list[str]) -> str:
    return f"""
[[rule]]
name = "crashed"
kind = "lease_expired"
limits = ["crash"]
clear_after_seconds = 1
actions = ["hook", "script"]

[[rule]]
name = "saturated"
kind = "limit_saturated"
limits = ["sat"]
for_seconds = 1
actions = ["hook"]

[[rule]]
name = "slow-wait"
kind = "waiter_waiting"
limits = ["sat"]
for_seconds = 1
actions = ["hook"]

[[rule]]
name = "denials"
kind = "denial_rate"
limits = ["busy"]
per_minute = 60
window_seconds = 2
actions = ["hook"]

[action.hook]
type = "webhook"
url = "{hook}"

[action.script]
type = "command"
command = {json.dumps(script)}
"""


async def _crash(client: AsyncClient) -> None:
    """A holder that never renews, as a crashed worker would."""
    rpc: Rpc = await client._ready()
    holder = Holder(worker_id="w-crash", host="host-7", pid=4242)
    request = AcquireRequest(
        request_id="crash-1",
        secret="crash-secret-0123456789",
        names=["crash"],
        lease_ttl=1,
        holder=holder,
    )
    assert (await rpc.call(ACQUIRE, request)).status == "granted"


async def _saturate(client: AsyncClient, receiver: Receiver) -> None:
    held = await client.acquire("sat")
    waiter = asyncio.create_task(client.acquire("sat"))
    await wait_until(lambda: receiver.of("saturated") and receiver.of("slow-wait"), timeout=15)
    await client.release(held)
    await client.release(await asyncio.wait_for(waiter, 10))


async def _deny(client: AsyncClient) -> None:
    held = await client.acquire("busy")
    for _ in range(2):
        with pytest.raises(AcquireTimeout):
            await client.acquire("busy", timeout_seconds=0.3)
    await client.release(held)


async def test_each_rule_fires_once_and_clears_once(
    nats_server: NatsServer,
    start_coordinator: Callable[..., Any],
    receiver: Receiver,
    tmp_path: Path,
):
    await start_coordinator()
    settings = ClientSettings(nats_url=nats_server.url)
    script_out = tmp_path / "script.jsonl"
    rules = parse_rules(_scenario_rules(receiver.url, _recorder(script_out)))
    async with AsyncClient(settings) as client, AsyncAdminClient(settings) as admin:
        for name in ("crash", "sat", "busy"):
            await admin.create_limit(name, 1)
        alerter = Alerter(rules, settings, tick_seconds=0.1)
        ready = asyncio.Event()
        task = asyncio.create_task(alerter.run(ready.set))
        try:
            await asyncio.wait_for(ready.wait(), 10)
            await asyncio.gather(_crash(client), _saturate(client, receiver), _deny(client))
            await wait_until(lambda: len(receiver.bodies) >= 8, timeout=20)
            await asyncio.sleep(0.5)  # nothing more comes
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    expected = {"crashed": "crash", "saturated": "sat", "slow-wait": "sat", "denials": "busy"}
    for rule, limit in expected.items():
        got = receiver.of(rule)
        assert [(b["state"], b["limit"]) for b in got] == [("firing", limit), ("resolved", limit)]
        assert got[0]["at"] <= got[1]["at"] and got[0]["summary"] and got[1]["figures"]
    crashed = receiver.of("crashed")[0]
    assert crashed["holder"] == {"worker_id": "w-crash", "host": "host-7", "pid": 4242, "label": ""}
    assert "w-crash@host-7 pid 4242" in crashed["summary"]
    assert receiver.of("saturated")[0]["duration_seconds"] >= 1
    assert receiver.of("slow-wait")[0]["figures"]["waited_seconds"] >= 1
    assert receiver.of("denials")[0]["figures"]["in_window"] > 2
    lines = script_out.read_text().splitlines()
    assert [json.loads(line)["state"] for line in lines] == ["firing", "resolved"]
