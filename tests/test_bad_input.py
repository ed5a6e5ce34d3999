"""Hostile input: thousands of malformed messages on every coordinator subject.

Any process that can publish on NATS can reach the coordinator, so it has to treat every byte
as hostile: answer each request with a clear `Reply` error (never crash, never go silent),
change no state on a refused request, and keep serving the clients it already has. The wire
schema in `gcl.protocol` is the spec: a payload it rejects must be refused as `invalid_request`
naming the first offending field (at most 200 characters of it); any JSON object whose `v` is
an integer outside the versions it serves (2 and 3) as `unsupported_version`, before its other
fields are judged, so a newer client hears "upgrade", not "unknown field".
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import nats
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from nats.aio.client import Client as NATS
from nats.errors import TimeoutError as NatsTimeout
from pydantic import BaseModel, ValidationError

from gcl.coordinator.nats_server import NatsServer
from gcl.coordinator.service import Coordinator
from gcl.coordinator.settings import CoordinatorSettings
from gcl.protocol import (
    MIN_PROTOCOL_VERSION,
    OPERATIONS,
    PROTOCOL_VERSION,
    RENEW,
    STATUS,
    HeldLease,
    LimitInfo,
    Message,
    Reply,
    Subjects,
)
from gcl.sdk.admin import AsyncAdminClient
from gcl.sdk.client import AsyncClient
from gcl.sdk.exceptions import LimitNotFound
from gcl.sdk.leases import Lease
from tests.conftest import wait_until

PREFIX = "gcl"
MAX_REQUEST_BYTES: int = CoordinatorSettings.model_fields["max_request_bytes"].default
HOSTILE_SECRET = "not-the-holders-secret"  # well-formed, but nobody was granted with it
MODELS: dict[str, type[Message]] = {op.name: op.request for op in OPERATIONS}
IN_FLIGHT = 32
REPLY_TIMEOUT = 15.0
REFUSED_AT_PARSE = {"invalid_request", "unsupported_version"}

NOT_JSON = [b"not json", b"{", b"}", b"\xff\xfe\x00", b"{'v': 1}", b"{v: 1}", b"[1,]", b"\x00" * 64]
NOT_AN_OBJECT = [b"[]", b"null", b"1", b'"text"', b"true", b"NaN", b"Infinity", b"-1e308"]
WRONG_VALUES: list[Any] = [
    None,
    True,
    [],
    {},
    "",
    "x" * 300,
    -1,
    0,
    1.5,
    1e308,
    -1e308,
    10**30,
    -(10**30),
    float("nan"),
    float("inf"),
    float("-inf"),
    [[[[["deep"]]]]],
    {"a": {"b": {"c": []}}},
]
BAD_NAMES: list[Any] = [
    "",
    " lead",
    "trail ",
    "in side",
    "tab\there",
    "new\nline",
    "*",
    "gpu:*",
    ">",
    "gpu.>",
    "a/b",
    "a%b",
    "a&b",
    "<x>",
    "n" * 201,
    "nul\x00",
    "esc\x1b[31m",
    "del\x7f",
    "\u2028sep",
    5,
    1.5,
    True,
    None,
    ["gpu"],
    {"name": "gpu"},
]
BAD_TOKENS: list[Any] = [
    "",
    "has space",
    "star*",
    "gt>",
    "slash/",
    "t" * 65,
    "ünïcode",
    "new\nline",
    "nul\x00",
    5,
    None,
    ["id"],
]


@dataclass(frozen=True)
class Case:
    """One hostile request and what the coordinator must answer.

    `code` None means the payload is well-formed: the engine decides, but never `internal`.
    """

    op: str
    data: bytes
    code: str | None
    field: str | None = None


# --- the schema as oracle ----------------------------------------------------------------------


def dumps(value: Any) -> bytes:
    """JSON as a hostile client writes it: NaN/Infinity tokens and huge ints included."""
    return json.dumps(value, allow_nan=True).encode()


def expected(op: str, data: bytes) -> tuple[str | None, str | None]:
    """What the wire schema says the coordinator must answer to `data` on `op`."""
    if len(data) > MAX_REQUEST_BYTES:  # refused unread, whatever it holds
        return "invalid_request", None
    try:
        request = MODELS[op].model_validate_json(data or b"{}")
    except ValidationError as exc:
        if _foreign_version(data):
            return "unsupported_version", "v"
        first = exc.errors(include_url=False, include_input=False)[0]
        if first["type"] == "json_invalid":
            return "invalid_request", None
        return "invalid_request", ".".join(str(part) for part in first["loc"])[:200] or None
    if not _served(request.v):
        return "unsupported_version", "v"
    return None, None


def _served(version: int) -> bool:
    return MIN_PROTOCOL_VERSION <= version <= PROTOCOL_VERSION


def _foreign_version(data: bytes) -> bool:
    try:
        version = json.loads(data).get("v", PROTOCOL_VERSION)
    except (ValueError, AttributeError, RecursionError):
        return False
    return isinstance(version, int) and not isinstance(version, bool) and not _served(version)


def oracle_case(op: str, data: bytes) -> Case:
    code, field = expected(op, data)
    return Case(op, data, code, field)


def stated(op: str, data: bytes, code: str | None, field: str | None = None) -> Case:
    """A hand-written expectation, cross-checked against the schema so the two cannot drift."""
    case = Case(op, data, code, field)
    assert expected(op, data) == (code, field), f"test table disagrees with schema: {case}"
    return case


# --- hand-written hostile tables ---------------------------------------------------------------


def bases(leases: list[Lease], waiter_request_id: str) -> dict[str, dict[str, Any]]:
    """A well-formed payload per operation, aimed at real state: a refusal must not touch it."""
    lease_id = leases[0].lease_id if leases else "no-lease"
    return {
        "acquire": {
            "request_id": "hostile-1",
            "secret": HOSTILE_SECRET,
            "names": ["before:a"],
            "wait": False,
        },
        "renew": {"lease_id": lease_id, "secret": HOSTILE_SECRET},
        "release": {"lease_id": lease_id, "secret": HOSTILE_SECRET},
        "wait.keepalive": {"request_id": waiter_request_id, "secret": HOSTILE_SECRET},
        "wait.withdraw": {"request_id": waiter_request_id, "secret": HOSTILE_SECRET},
        "wait.inspect": {"request_id": waiter_request_id, "secret": HOSTILE_SECRET},
        "admin.limit.create": {"name": "hostile:new", "limit": 1},
        "admin.limit.get": {"name": "before:a"},
        "admin.limit.list": {"pattern": "*"},
        "admin.limit.update": {"name": "before:a", "limit": 1, "active": False},
        "admin.limit.delete": {"name": "before:a"},
        "admin.lease.list": {"name": "before:a"},
        "admin.lease.revoke": {"lease_id": lease_id},
        "admin.ping": {},
        "admin.status": {},
    }


def first_required(op: str) -> str | None:
    return next((k for k, f in MODELS[op].model_fields.items() if f.is_required()), None)


def envelope_cases(op: str, base: dict[str, Any]) -> list[Case]:
    """Bytes that are not a request at all: not JSON, not an object, nothing, too deep."""
    cases = [stated(op, data, "invalid_request") for data in NOT_JSON + NOT_AN_OBJECT]
    cases.append(stated(op, b"[" * 100_000 + b"]" * 100_000, "invalid_request"))
    cases.append(stated(op, b'{"deep":' + b"[" * 5_000 + b"]" * 5_000 + b"}", "invalid_request"))
    required = first_required(op)
    cases.append(stated(op, b"", "invalid_request" if required else None, required))
    cases.append(stated(op, b"{}", "invalid_request" if required else None, required))
    cases.append(stated(op, dumps({**base, "bogus_field": 1}), "invalid_request", "bogus_field"))
    cases.append(stated(op, dumps({**base, "V": 1}), "invalid_request", "V"))
    for field in MODELS[op].model_fields:
        if MODELS[op].model_fields[field].is_required():
            partial = {k: v for k, v in base.items() if k != field}
            cases.append(stated(op, dumps(partial), "invalid_request", field))
    return cases


def version_cases(op: str, base: dict[str, Any]) -> list[Case]:
    """Another protocol version is refused before it acts, even when aimed at real state."""
    cases = [
        stated(op, dumps({**base, "v": v}), "unsupported_version", "v")
        for v in (0, MIN_PROTOCOL_VERSION - 1, PROTOCOL_VERSION + 1, -1, 99, 10**30)
    ]
    for v in ("two", None, 1.5, [], {}, 1e308, float("nan"), float("inf")):
        cases.append(stated(op, dumps({**base, "v": v}), "invalid_request", "v"))
    return cases


def wrong_value_cases(op: str, base: dict[str, Any]) -> list[Case]:
    """Every field of the request set to values of the wrong type, size or sign."""
    cases = []
    for field in MODELS[op].model_fields:
        if field == "v":
            continue
        for value in WRONG_VALUES:
            data = dumps({**base, field: value})
            code, _ = expected(op, data)
            if code is not None:  # a value the schema accepts here is not hostile
                cases.append(oracle_case(op, data))
    return cases


def name_cases(op: str, base: dict[str, Any]) -> list[Case]:
    """Limit names that would break shells, URLs or NATS wildcards, or are not strings."""
    if op == "acquire":
        return [
            stated(op, dumps({**base, "names": [bad]}), "invalid_request", "names.0")
            for bad in BAD_NAMES
        ] + [
            stated(op, dumps({**base, "names": []}), "invalid_request", "names"),
            stated(op, dumps({**base, "names": ["ok"] * 33}), "invalid_request", "names"),
            stated(op, dumps({**base, "names": "before:a"}), "invalid_request", "names"),
        ]
    if "name" not in MODELS[op].model_fields:
        return []
    optional = not MODELS[op].model_fields["name"].is_required()
    return [
        stated(op, dumps({**base, "name": bad}), "invalid_request", "name")
        for bad in BAD_NAMES
        if not (optional and bad is None)
    ]


def token_cases(op: str, base: dict[str, Any]) -> list[Case]:
    """Lease ids, request ids and notify inboxes with characters a subject or log must not see."""
    cases = []
    for field in ("request_id", "lease_id", "notify"):
        if field not in MODELS[op].model_fields:
            continue
        for bad in [*BAD_TOKENS, "n" * 256]:
            if field == "notify" and (bad is None or bad == "t" * 65):
                continue  # notify is optional, and an inbox may be up to 255 long
            data = dumps({**base, field: bad})
            cases.append(stated(op, data, "invalid_request", field))
    return cases


def unknown_target_cases() -> list[Case]:
    """Well-formed requests for things that do not exist get their own codes, not a crash."""
    ghost = {"lease_id": "0" * 32}
    held = {**ghost, "secret": HOSTILE_SECRET}
    return [
        Case("renew", dumps(held), "lease_not_found", "lease_id"),
        Case("release", dumps(held), "lease_not_found", "lease_id"),
        Case("admin.lease.revoke", dumps(ghost), "lease_not_found", "lease_id"),
        Case("admin.limit.get", dumps({"name": "ghost"}), "limit_not_found", "name"),
        Case("admin.limit.delete", dumps({"name": "ghost"}), "limit_not_found", "name"),
        Case("admin.lease.list", dumps({"name": "ghost"}), "limit_not_found", "name"),
        Case("admin.limit.update", dumps({"name": "ghost", "limit": 1}), "limit_not_found", "name"),
        Case("admin.limit.create", dumps({"name": "before:a", "limit": 9}), "limit_exists", "name"),
        Case(
            "acquire",
            dumps(
                {
                    "request_id": "h-strict",
                    "secret": HOSTILE_SECRET,
                    "names": ["ghost"],
                    "strict": True,
                }
            ),
            "limit_not_found",
            "names",
        ),
        Case(
            "acquire",
            dumps(
                {
                    "request_id": "h-big",
                    "secret": HOSTILE_SECRET,
                    "names": ["before:a"],
                    "occupy": 6,
                }
            ),
            "invalid_request",
            "occupy",
        ),
        Case(
            "acquire",
            dumps(
                {
                    "request_id": "h-rate",
                    "secret": HOSTILE_SECRET,
                    "names": ["before:a"],
                    "mode": "rate",
                }
            ),
            "invalid_request",
            "slot_decay_per_second",
        ),
    ]


def big_payload_cases(op: str, base: dict[str, Any], max_payload: int) -> list[Case]:
    """Just under MAX_REQUEST_BYTES: parsed, refused naming the field, answered briefly. Over
    it, up to the server's max_payload: refused unread (no field), answered briefly too."""
    under = _big(op, base, MAX_REQUEST_BYTES - 4_096)
    over = _big(op, base, max_payload - 4_096)
    return [stated(op, data, "invalid_request", field) for data, field in under] + [
        stated(op, data, "invalid_request") for data, _ in over
    ]


def _big(op: str, base: dict[str, Any], size: int) -> list[tuple[bytes, str]]:
    if op == "acquire":
        return [
            (dumps({**base, "names": ["n" * size]}), "names.0"),
            (dumps({**base, "holder": {"label": "l" * size}}), "holder.label"),
        ]
    for field in ("name", "lease_id", "request_id", "pattern"):
        if field in MODELS[op].model_fields:
            return [(dumps({**base, field: "x" * size}), field)]
    return [(dumps({**base, "pad": "x" * size}), "pad")]


def hostile_cases(leases: list[Lease], waiter_request_id: str, max_payload: int) -> list[Case]:
    cases = unknown_target_cases()
    for op, base in bases(leases, waiter_request_id).items():
        cases += envelope_cases(op, base)
        cases += version_cases(op, base)
        cases += wrong_value_cases(op, base)
        cases += name_cases(op, base)
        cases += token_cases(op, base)
        cases += big_payload_cases(op, base, max_payload)
    return cases


# --- hypothesis: a bounded, reproducible corpus of JSON-ish payloads ---------------------------

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=250)
)
JSONISH = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def hypothesis_payload(draw: st.DrawFn) -> tuple[str, bytes]:
    """A payload for a random operation: its own field names with arbitrary values, or junk."""
    op = draw(st.sampled_from(sorted(MODELS)))
    shape = draw(st.sampled_from(["fields", "fields", "any", "bytes"]))
    if shape == "bytes":
        return op, draw(st.binary(max_size=300))
    if shape == "any":
        return op, dumps(draw(JSONISH))
    fields = [*MODELS[op].model_fields, "extra", "V"]
    chosen = draw(st.lists(st.sampled_from(fields), max_size=len(fields), unique=True))
    return op, dumps({field: draw(JSONISH) for field in chosen})


def hypothesis_corpus(count: int) -> list[Case]:
    """Draw `count` payloads with hypothesis; derandomized so a failure reproduces exactly."""
    drawn: list[tuple[str, bytes]] = []

    @settings(
        max_examples=count,
        database=None,
        derandomize=True,
        phases=[Phase.generate],
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(hypothesis_payload())
    def collect(item: tuple[str, bytes]) -> None:
        drawn.append(item)

    collect()
    return [oracle_case(op, data) for op, data in drawn]


# --- sending --------------------------------------------------------------------------------


@pytest.fixture
async def raw(nats_server: NatsServer) -> AsyncIterator[NATS]:
    """A bare nats-py connection: no SDK validation between the test and the coordinator."""
    nc = await nats.connect(nats_server.url, name="hostile")
    try:
        yield nc
    finally:
        await nc.close()


async def ask(nc: NATS, case: Case) -> Reply:
    subject = Subjects(PREFIX).op(case.op)
    try:
        msg = await nc.request(subject, case.data, timeout=REPLY_TIMEOUT)
    except NatsTimeout:
        raise AssertionError(f"no reply within {REPLY_TIMEOUT}s to {_show(case)}") from None
    reply = Reply.model_validate_json(msg.data)
    assert reply.v == PROTOCOL_VERSION
    return reply


def check(case: Case, reply: Reply) -> None:
    """The reply is the envelope the schema promises: a named refusal, or a real answer."""
    where = _show(case)
    if reply.ok:
        assert case.code is None, f"accepted {where}: {reply.result}"
        assert reply.result is not None and reply.error is None, where
        return
    assert reply.error is not None and reply.result is None, where
    assert reply.error.message, where
    assert reply.error.code != "internal", f"internal error on {where}: {reply.error.message}"
    if case.code is None:
        assert reply.error.code not in REFUSED_AT_PARSE, f"{where}: {reply.error}"
        return
    assert (reply.error.code, reply.error.field) == (case.code, case.field), f"{where}: {reply}"
    if case.field and case.code == "invalid_request":
        named = case.field.split(".")[0]
        # engine messages use the name, parse errors its repr (a dotted key's repr continues)
        shown = (named, repr(named)[1:-1])
        assert any(s in reply.error.message for s in shown), f"{where}: {reply.error.message}"


async def barrage(nc: NATS, cases: list[Case]) -> int:
    """Send every case as a request, a bounded number at a time; check each reply."""
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(case: Case) -> None:
        async with gate:
            check(case, await ask(nc, case))

    await asyncio.gather(*(one(case) for case in cases))
    return len(cases)


async def fire_and_forget(nc: NATS, cases: list[Case]) -> int:
    """Publish with no reply, with a reply nobody reads, and with the coordinator's own
    subjects as the reply: none may crash it or start a loop."""
    subjects = Subjects(PREFIX)
    reply_to = [
        "",
        "_INBOX.nobody.listens",
        subjects.op("admin.limit.delete"),
        subjects.op("acquire"),
    ]
    sent = 0
    for index, case in enumerate(cases):
        reply = reply_to[index % len(reply_to)]
        await nc.publish(subjects.op(case.op), case.data, reply=reply)
        sent += 1
        if sent % 200 == 0:
            await nc.flush()
    await nc.flush()
    return sent


def _show(case: Case) -> str:
    data = case.data if len(case.data) <= 160 else case.data[:160] + b"..."
    return f"{case.op} {data!r} (expected {case.code}, field {case.field})"


# --- state before and after -----------------------------------------------------------------


@dataclass
class World:
    """Real clients' state that no hostile message may disturb."""

    leases: list[Lease]
    waiter: asyncio.Task[Lease]
    waiter_request_id: str


async def build_world(client: AsyncClient, admin: AsyncAdminClient) -> World:
    await admin.create_limit("before:a", 5)
    await admin.create_limit("before:b", 3)
    await admin.create_limit("before:queue", 1)
    leases = [
        await client.acquire("before:a", occupy=2, lease_ttl=120),
        await client.acquire(["before:a", "before:b"], lease_ttl=120),
        await client.acquire("before:queue", lease_ttl=120),
    ]
    waiter = asyncio.create_task(client.acquire("before:queue", timeout_seconds=60))
    await wait_until(lambda: _waiters(admin, "before:queue", 1))
    detail = await admin.get_limit("before:queue")
    return World(leases, waiter, detail.waiters[0].request_id)


async def _waiters(admin: AsyncAdminClient, name: str, count: int) -> bool:
    return (await admin.get_limit(name)).limit.waiters == count


async def snapshot(admin: AsyncAdminClient) -> dict[str, Any]:
    """Limits' figures and leases, without the one field that moves by itself (expires_in)."""
    limits: list[LimitInfo] = await admin.list_limits("before:*")
    leases = await admin.list_leases()
    return {
        "limits": [info.model_dump() for info in limits],
        "leases": {lease.lease_id: lease.model_dump(exclude={"expires_in"}) for lease in leases},
    }


async def prove_world_intact(
    world: World, before: dict[str, Any], client: AsyncClient, admin: AsyncAdminClient
) -> None:
    pong = await admin.ping()
    assert pong.coordinator_id
    assert await snapshot(admin) == before
    listed = {lease.lease_id for lease in await admin.list_leases()}
    assert {lease.lease_id for lease in world.leases} <= listed
    rpc = await client._ready()
    for lease in world.leases:
        assert lease.info is not None
        held = HeldLease(lease_id=lease.info.lease_id, secret=lease.secret)
        renewed = await rpc.call(RENEW, held)
        assert renewed.expires_in == lease.info.ttl
    with pytest.raises(LimitNotFound):
        await admin.get_limit("hostile:new")  # the v2 and misspelt creates did nothing
    assert not world.waiter.done()


async def prove_still_correct(world: World, client: AsyncClient, admin: AsyncAdminClient) -> None:
    """The queue moves, releases free slots, and a limit of 2 never grants a third."""
    await client.release(world.leases[2])
    queued = await asyncio.wait_for(world.waiter, 10)
    await client.release(queued)
    for lease in world.leases[:2]:
        await client.release(lease)
        assert not lease.lost
    for name in ("before:a", "before:b", "before:queue"):
        info = (await admin.get_limit(name)).limit
        assert (info.held, info.leases, info.waiters) == (0, 0, 0), info
    await no_over_grant(client, admin)


async def no_over_grant(client: AsyncClient, admin: AsyncAdminClient) -> None:
    await admin.create_limit("after:pair", 2)
    inside = 0
    most = 0
    tokens: list[int] = []

    async def worker() -> None:
        nonlocal inside, most
        async with client.concurrency("after:pair") as lease:
            inside += 1
            most = max(most, inside)
            assert lease.fencing_token is not None
            tokens.append(lease.fencing_token)
            assert (await admin.get_limit("after:pair")).limit.held <= 2
            await asyncio.sleep(0.2)
            inside -= 1

    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(10))), 30)
    assert most == 2
    first = min(tokens)
    assert sorted(tokens) == list(range(first, first + 10))  # one each, consecutive
    await client.flush_releases()  # a block's exit does not wait for its release's reply
    info = (await admin.get_limit("after:pair")).limit
    assert (info.held, info.leases, info.waiters) == (0, 0, 0)


# --- the tests ------------------------------------------------------------------------------


def test_every_operation_is_attacked() -> None:
    """If an operation is added to the protocol, this file must learn to attack it too."""
    assert set(bases([], "")) == set(MODELS) == {op.name for op in OPERATIONS}


async def test_hostile_barrage_is_refused_and_changes_nothing(
    coordinator: Coordinator,
    client: AsyncClient,
    admin: AsyncAdminClient,
    raw: NATS,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """~4,700 hostile messages on all 13 subjects: each request gets a named refusal, and
    real holders, waiters and limits come through untouched and still correct."""
    caplog.set_level(logging.WARNING, logger="gcl.coordinator")
    routes = {op: model for op, (model, _) in coordinator._handlers.items()}
    routes[STATUS.name] = STATUS.request  # every coordinator answers it on its own subscription
    assert routes == MODELS, "the coordinator parses some subject with another model"
    corpus = hypothesis_corpus(1_200)  # before any waiter: drawing blocks the event loop
    world = await build_world(client, admin)
    before = await snapshot(admin)

    cases = hostile_cases(world.leases, world.waiter_request_id, raw.max_payload) + corpus
    sent = await barrage(raw, cases)
    small = [case for case in cases if len(case.data) < 10_000]
    sent += await fire_and_forget(raw, small)
    assert sent > 3_000

    await prove_world_intact(world, before, client, admin)
    await prove_still_correct(world, client, admin)
    trouble = [r for r in caplog.records if r.name.startswith("gcl.coordinator")]
    assert not trouble, [r.getMessage()[:200] for r in trouble]


async def test_huge_unknown_field_name_still_gets_a_reply(
    coordinator: Coordinator, raw: NATS
) -> None:
    key = "k" * (MAX_REQUEST_BYTES - 100)
    case = Case("admin.ping", dumps({key: 1}), "invalid_request", key)
    msg = await raw.request(Subjects(PREFIX).op(case.op), case.data, timeout=3)
    reply = Reply.model_validate_json(msg.data)
    assert reply.error is not None and reply.error.code == "invalid_request"
    assert len(msg.data) < 10_000


@pytest.mark.parametrize(
    "field, value",
    [("occupy", True), ("occupy", "2"), ("occupy", 2.0), ("wait", "yes"), ("v", "1")],
)
async def test_wrong_json_types_are_refused_not_coerced(
    coordinator: Coordinator, raw: NATS, field: str, value: Any
) -> None:
    payload = {"request_id": "lax-1", "secret": HOSTILE_SECRET, "names": ["nobody"], field: value}
    case = Case("acquire", dumps(payload), "invalid_request", field)
    check(case, await ask(raw, case))


def _forbids_extra(model: type[BaseModel]) -> bool:
    return model.model_config.get("extra") == "forbid"


def test_every_request_model_forbids_unknown_fields() -> None:
    """Typos must fail loudly: a misspelt `ocupy` silently meaning occupy=1 would over-grant."""
    assert all(_forbids_extra(model) for model in MODELS.values())
