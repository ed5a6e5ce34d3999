"""One thread for every blocking call into the store: open, commits, close, in order.

Commits never run on the event loop, so a slow disk or another process holding the database
lock delays only commits: the loop keeps answering pings, renewals and releases from memory.
The thread is a daemon: a commit stuck in the database can never keep the process from exiting
(its transaction simply never happened, and nothing it carried was announced).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
_Job = tuple[Callable[..., Any], tuple[Any, ...], asyncio.Future[Any], asyncio.AbstractEventLoop]


class StoreThread:
    """Runs callables one at a time on a thread of its own; `run` returns an awaitable."""

    def __init__(self, name: str = "gcl-store") -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def run(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Queue `fn(*args)`; the future settles on the caller's loop when it has run."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((fn, args, future, loop))
        return future

    def stop(self) -> None:
        """Let the thread end after the jobs already queued (it never blocks the caller)."""
        self._jobs.put(None)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, args, future, loop = job
            try:
                result = fn(*args)
            except BaseException as exc:
                self._settle(loop, future, None, exc)
            else:
                self._settle(loop, future, result, None)

    @staticmethod
    def _settle(
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[Any],
        result: Any,
        error: BaseException | None,
    ) -> None:
        def settle() -> None:
            if future.done():  # the caller gave up waiting (it was cancelled)
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)

        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(settle)
