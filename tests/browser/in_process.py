"""A site served from inside the test process (uvicorn on a thread of its own, the embedded stores),
for browser tests that must read what only the server knows: the answer of a captcha it drew, read
from its captcha store as an operator's tool would (``CaptchaStore.peek``), never from the picture."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from railbook.adapters.db.migrate import upgrade
from railbook.api.app import create_app
from railbook.bootstrap import Container, build_container
from railbook.config import Settings
from railbook.services.catalog.site import prepare_site
from tests.live_server import Site, free_port

START_TIMEOUT = 120.0


@dataclass(frozen=True)
class InProcessSite(Site):
    """A live site whose container (and event loop) this process holds."""

    container: Container
    loop: asyncio.AbstractEventLoop

    async def captcha_answer(self, captcha_id: str) -> str | None:
        """The answer the server keeps for a captcha, read on the server's own loop."""
        future = asyncio.run_coroutine_threadsafe(self.container.captchas.peek(captcha_id), self.loop)
        return await asyncio.wrap_future(future)


@contextmanager
def serve_in_process(workdir: Path, **settings: Any) -> Iterator[InProcessSite]:
    """The whole system (API and background roles) on a free port, on SQLite, with the sample timetable
    and these settings; stopped afterwards."""
    import uvicorn

    port = free_port()
    database_url = f"sqlite+aiosqlite:///{workdir / 'rb.db'}"
    config = Settings(database_url=database_url, redis_url=None, data_dir=workdir, **settings)
    upgrade(database_url)
    loop = asyncio.new_event_loop()
    ready: dict[str, Any] = {}

    async def run() -> None:
        container = await build_container(config)
        try:
            await prepare_site(container, load_sample=True)
            app = create_app(container=container, run_background=True)
            server = uvicorn.Server(
                uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
            )
            ready.update(container=container, server=server)
            await server.serve()
        finally:
            await container.close()

    def main() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(run())
        except BaseException as exc:  # seen by the waiting test as the reason it never came up
            ready["error"] = exc
        finally:
            loop.close()

    thread = threading.Thread(target=main, name="in-process-site", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if "error" in ready or not thread.is_alive():
                pytest.fail(f"the in-process site did not start: {ready.get('error')!r}")
            try:
                if "server" in ready and httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the in-process site not healthy after {START_TIMEOUT}s")
            time.sleep(0.2)
        yield InProcessSite(url, workdir / "serve.log", ready["container"], loop)
    finally:
        if "server" in ready:
            ready["server"].should_exit = True
        thread.join(timeout=30)
