"""Where alerts go: a log line, a command reading the alert as JSON on stdin, or a webhook POST.

Each action has its own queue and worker, so alerts reach it in order (firing before resolved)
and a slow or broken action never holds up the others or the evaluation. Actions never raise:
a failure is logged and the alerter goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import urllib.error
import urllib.request
from collections.abc import Iterable
from typing import Protocol

from gcl.alerting.alert import Alert
from gcl.alerting.rules import ActionSpec, RuleFile

log = logging.getLogger("gcl.alert")
QUEUE_SIZE = 1_000
MAX_BACKOFF = 60.0
STOP_TIMEOUT = 10.0
LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class Action(Protocol):
    name: str

    async def send(self, alert: Alert) -> None: ...


class LogAction:
    def __init__(self, name: str, spec: ActionSpec) -> None:
        self.name = name
        self.level = LEVELS[spec.level]

    async def send(self, alert: Alert) -> None:
        level = self.level if alert.state == "firing" else logging.INFO
        log.log(level, "%s", alert.line())


class CommandAction:
    """Runs the command once per alert; the alert is JSON on stdin, and GCL_ALERT_* in env."""

    def __init__(self, name: str, spec: ActionSpec) -> None:
        self.name = name
        command = spec.command or []
        self.argv = shlex.split(command) if isinstance(command, str) else list(command)
        self.timeout = spec.timeout_seconds

    async def send(self, alert: Alert) -> None:
        env = {
            **os.environ,
            "GCL_ALERT_RULE": alert.rule,
            "GCL_ALERT_STATE": alert.state,
            "GCL_ALERT_LIMIT": alert.limit,
        }
        try:
            process = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env=env,
            )
        except OSError as exc:
            log.error("alert action %r: cannot run %s: %s", self.name, self.argv[:1], exc)
            return
        data = alert.model_dump_json().encode()
        try:
            _, err = await asyncio.wait_for(process.communicate(data), self.timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            log.error("alert action %r: command ran over %gs; killed", self.name, self.timeout)
            return
        if process.returncode:
            tail = err.decode(errors="replace").strip()[-500:]
            log.error("alert action %r exited %d: %s", self.name, process.returncode, tail)


class WebhookAction:
    """POSTs the alert as JSON; retries with exponential backoff, a bounded number of times."""

    def __init__(self, name: str, spec: ActionSpec) -> None:
        self.name = name
        self.url = spec.url or ""
        self.headers = {"Content-Type": "application/json", **spec.headers}
        self.timeout = spec.timeout_seconds
        self.retries = spec.retries
        self.backoff = spec.backoff_seconds

    async def send(self, alert: Alert) -> None:
        data = alert.model_dump_json().encode()
        for attempt in range(self.retries + 1):
            problem, retry = await asyncio.to_thread(self._post, data)
            if problem is None:
                return
            if not retry or attempt == self.retries:
                log.error(
                    "alert action %r: POST %s failed after %d attempt(s): %s; alert dropped: %s",
                    self.name,
                    self.url,
                    attempt + 1,
                    problem,
                    alert.line(),
                )
                return
            await asyncio.sleep(min(self.backoff * 2**attempt, MAX_BACKOFF))

    def _post(self, data: bytes) -> tuple[str | None, bool]:
        """(None, _) when delivered; else (why, worth retrying)."""
        request = urllib.request.Request(self.url, data=data, headers=self.headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read(65_536)
            return None, False
        except urllib.error.HTTPError as exc:
            return f"HTTP {exc.code}", exc.code >= 500 or exc.code in (408, 429)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            return str(getattr(exc, "reason", exc)), True


KINDS: dict[str, type[LogAction] | type[CommandAction] | type[WebhookAction]] = {
    "log": LogAction,
    "command": CommandAction,
    "webhook": WebhookAction,
}


def build_action(name: str, spec: ActionSpec) -> Action:
    return KINDS[spec.type](name, spec)


class Dispatcher:
    """Routes each alert to its rule's actions, through one queue and worker per action."""

    def __init__(self, rules: RuleFile) -> None:
        self.routes: dict[str, list[str]] = {r.name: list(r.actions) for r in rules.rule}
        names = {name for r in rules.rule for name in r.actions}
        self.actions = {
            name: build_action(name, rules.action.get(name, ActionSpec(type="log")))
            for name in names
        }
        self.queues: dict[str, asyncio.Queue[Alert]] = {}
        self.workers: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for name, action in self.actions.items():
            queue: asyncio.Queue[Alert] = asyncio.Queue(QUEUE_SIZE)
            self.queues[name] = queue
            self.workers.append(asyncio.get_running_loop().create_task(_work(action, queue)))

    def submit(self, alerts: Iterable[Alert]) -> None:
        for alert in alerts:
            for name in self.routes.get(alert.rule, []):
                try:
                    self.queues[name].put_nowait(alert)
                except asyncio.QueueFull:
                    log.error(
                        "alert action %r is %d alerts behind; dropped: %s",
                        name,
                        QUEUE_SIZE,
                        alert.line(),
                    )

    async def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Give queued alerts a bounded chance to go out, then stop the workers."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(q.join() for q in self.queues.values())), timeout
            )
        for worker in self.workers:
            worker.cancel()
        await asyncio.gather(*self.workers, return_exceptions=True)


async def _work(action: Action, queue: asyncio.Queue[Alert]) -> None:
    while True:
        alert = await queue.get()
        try:
            await action.send(alert)
        except Exception:
            log.exception("alert action %r failed", action.name)
        finally:
            queue.task_done()
