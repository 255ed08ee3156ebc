"""The lifetime the inbox and the delivery worker share (federation/store.py):
``service_ctx`` starts and stops a service with its app, and ``nap`` never swallows
a cancellation, so a background loop's ``stop()`` cannot hang."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from federation import store


class Recorder:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def start(self) -> None:
        self.log.append("start")

    async def stop(self) -> None:
        self.log.append("stop")


KEY: web.AppKey[Recorder] = web.AppKey("recorder", Recorder)


async def test_service_ctx_runs_the_service_for_the_apps_lifetime() -> None:
    log: list[str] = []
    app = web.Application()
    app.cleanup_ctx.append(store.service_ctx(lambda _app: Recorder(log), KEY))
    runner = web.AppRunner(app)
    await runner.setup()  # runs the startup half of cleanup_ctx
    assert log == ["start"] and app[KEY].log is log
    await runner.cleanup()
    assert log == ["start", "stop"]


async def test_nap_wakes_early_and_clears_the_event() -> None:
    wake = asyncio.Event()
    asyncio.get_running_loop().call_later(0.01, wake.set)
    started = asyncio.get_running_loop().time()
    await store.nap(wake, 10)
    assert asyncio.get_running_loop().time() - started < 5 and not wake.is_set()
    await store.nap(wake, 0.01)  # and times out quietly


async def test_nap_never_swallows_a_cancellation_landing_as_it_wakes() -> None:
    # The race asyncio.wait_for loses on 3.11: the event fires and the task is
    # cancelled in the same loop iteration. The cancellation must win every time.
    for _ in range(50):
        wake = asyncio.Event()
        task = asyncio.create_task(store.nap(wake, 10))
        await asyncio.sleep(0)  # the nap is now waiting
        wake.set()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
