"""How a waiting request says why it is blocked (gcl.sdk.waiting), and its rough estimate."""

from __future__ import annotations

import pytest

from gcl.protocol import Holder, Holding, Standing, WaitDetail
from gcl.sdk import format as fmt
from gcl.sdk.waiting import Waiting, estimate_wait


def standing(**fields: object) -> Standing:
    values: dict[str, object] = {
        "name": "gpu:gpu-1",
        "position": 0,
        "waiters": 1,
        "limit": 2,
        "occupied": 2.0,
        "active": True,
        "avg_hold_seconds": 60.0,
        "leases": 2,
        "holders": [
            Holding(holder=Holder(worker_id="gpu-2", host="node-7", pid=42), occupy=1,
                    held_seconds=50.0),
            Holding(holder=Holder(worker_id="gpu-3", label="train"), occupy=1, held_seconds=5.0),
        ],
        **fields,
    }  # fmt: skip
    return Standing.model_validate(values)


@pytest.mark.parametrize(
    "n, text",
    [(1, "1st"), (2, "2nd"), (3, "3rd"), (4, "4th"), (11, "11th"), (12, "12th"), (13, "13th"),
     (21, "21st"), (22, "22nd"), (101, "101st"), (111, "111th")],
)  # fmt: skip
def test_ordinal(n: int, text: str) -> None:
    assert fmt.ordinal(n) == text


def test_holding() -> None:
    who = Holder(worker_id="gpu-2", host="node-7", pid=42, label="train")
    assert fmt.holding(who, 245) == "gpu-2@node-7 pid 42 [train] for 4m05s"
    assert fmt.holding(who, 9.5, occupy=3) == "gpu-2@node-7 pid 42 [train] for 9.5s, 3 slots"


def test_the_first_in_line_waits_for_the_oldest_holder() -> None:
    # gpu-2 has held 50 of a usual 60 s: about 10 s to go
    assert estimate_wait([standing()], 1) == pytest.approx(10.0)


def test_further_back_waits_for_more_holders_and_then_turnover() -> None:
    assert estimate_wait([standing(position=1)], 1) == pytest.approx(55.0)  # gpu-3 too
    # two ahead of it, then itself: every current holder leaves, then a 2-slot limit
    # turns over every 60 s, one slot at a time: 55 + 1 * 60 / 2
    assert estimate_wait([standing(position=2)], 1) == pytest.approx(85.0)


def test_no_estimate_without_a_hold_to_judge_by_and_none_needed_with_room() -> None:
    assert estimate_wait([standing(avg_hold_seconds=0.0)], 1) is None
    assert estimate_wait([standing(occupied=1.0)], 1) == 0.0
    assert estimate_wait([standing(active=False, avg_hold_seconds=0.0)], 1) == 0.0


def test_the_slowest_limit_decides() -> None:
    fast = standing(name="a")
    slow = standing(name="b", avg_hold_seconds=600.0)
    assert estimate_wait([fast, slow], 1) == pytest.approx(550.0)


def test_the_line_for_a_log_and_an_error() -> None:
    detail = WaitDetail(
        status="queued", request_id="r", occupy=1, waited_seconds=12.0,
        standings=[standing(position=1, waiters=3, leases=5)],
    )  # fmt: skip
    waiting = Waiting.from_detail(detail, ["gpu:gpu-1"])
    assert str(waiting) == (
        "waiting 12s for 1 slot on gpu:gpu-1: 2nd in line of 3, 2/2 occupied by "
        "gpu-2@node-7 pid 42 for 50s, gpu-3 [train] for 5.0s and 3 more, usual hold 1m00s; "
        "may run in ~" + fmt.duration(waiting.estimate_seconds or 0)
    )
    assert waiting.positions == {"gpu:gpu-1": 1}
    assert waiting.holders == {"gpu:gpu-1": ["gpu-2@node-7 pid 42", "gpu-3 [train]"]}


def test_several_limits_are_named_each() -> None:
    detail = WaitDetail(
        status="queued", request_id="r", occupy=2, waited_seconds=1.0,
        standings=[standing(name="a", avg_hold_seconds=0.0), standing(name="b", active=False)],
    )  # fmt: skip
    text = str(Waiting.from_detail(detail, ["a", "b"]))
    assert text.startswith("waiting 1.0s for 2 slots on a, b: a: 1st in line of 1, ")
    assert "; b: not enforced (dry run); no estimate yet" in text


def test_any_moment_says_when_the_holders_are_overdue() -> None:
    late = standing(holders=[
        Holding(holder=Holder(worker_id="gpu-2"), occupy=1, held_seconds=90.0),
        Holding(holder=Holder(worker_id="gpu-3"), occupy=1, held_seconds=80.0),
    ])  # fmt: skip
    detail = WaitDetail(status="queued", request_id="r", occupy=1, standings=[late])
    assert str(Waiting.from_detail(detail, ["gpu:gpu-1"])).endswith(
        "may run any moment (its holders are past the usual hold)"
    )
