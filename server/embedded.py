"""A server in a background thread of this process, for the CLI and tests.

with EmbeddedServer(Path("models")) as server:
    channel = grpc.insecure_channel(server.target)
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from types import TracebackType

from stad.server.app import StadServer, create_server
from stad.server.settings import Settings


class EmbeddedServer:
    """Runs the aio server on 127.0.0.1 (a free port) in a daemon thread with its own loop."""

    def __init__(self, model_dir: Path, *, device: str = "auto", settings: Settings | None = None) -> None:
        base = settings if settings is not None else Settings(model_dir=Path(model_dir))
        self.settings = replace(base, model_dir=Path(model_dir), device=device, address="127.0.0.1:0")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: StadServer | None = None
        self.port = 0

    @property
    def target(self) -> str:
        if not self.port:
            raise RuntimeError("the embedded server is not running; call start() or use `with`")
        return f"127.0.0.1:{self.port}"

    def start(self) -> EmbeddedServer:
        if self._thread is not None:
            raise RuntimeError("the embedded server is already running")
        started: Future[int] = Future()
        self._thread = threading.Thread(target=self._run, args=(started,), name="stad-embedded", daemon=True)
        self._thread.start()
        self.port = started.result()
        return self

    def stop(self, grace_s: float = 5.0) -> None:
        """Shut the server down gracefully and join its thread; a no-op when stopped."""
        if self._thread is None or self._loop is None or self._server is None:
            return
        asyncio.run_coroutine_threadsafe(self._server.stop(grace_s), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._thread = None
        self._server = None
        self.port = 0

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self, started: Future[int]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._server, port = loop.run_until_complete(create_server(self.settings.address, self.settings))
        except BaseException as exc:
            started.set_exception(exc)
            loop.close()
            return
        started.set_result(port)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
