"""An event loop on a daemon thread: how sync code and the renewer run async code.

The thread keeps running whatever the caller's thread does (a CPU-bound body, a blocking call),
which is exactly what lease renewal needs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run to completion; Ctrl-C in the caller cancels the coroutine (so waiters withdraw)."""
        future = self.submit(coro)
        try:
            return future.result(timeout)
        except BaseException:
            future.cancel()
            raise

    def call_soon(self, callback: Any, *args: Any) -> None:
        self.loop.call_soon_threadsafe(callback, *args)

    def stop(self, timeout: float = 5.0) -> None:
        """Cancel what still runs on the loop and let it finish (bounded), then stop the loop:
        a task left pending when its loop closes is reported ("Task was destroyed but it is
        pending") when it is collected, as at every interpreter exit before."""
        if self.loop.is_closed():
            return
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            with contextlib.suppress(Exception):
                self.submit(_cancel_others(timeout / 2)).result(timeout)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self.loop.close()


async def _cancel_others(seconds: float) -> None:
    """Cancel every other task of this loop and wait (at most `seconds`) for them to end."""
    me = asyncio.current_task()
    others = [task for task in asyncio.all_tasks() if task is not me]
    for task in others:
        task.cancel()
    if others:
        await asyncio.wait(others, timeout=seconds)
