"""`stad serve` as a separate process on a free loopback port, for as long as a `with` block runs."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from stad.client import Client, StadError

READY_TIMEOUT_S = 120.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerProcess:
    """Runs `stad serve --model-dir DIR` until the block ends; `target` is its address."""

    def __init__(self, model_dir: Path, *, device: str = "auto") -> None:
        self.target = f"127.0.0.1:{free_port()}"
        self._command = [
            *(sys.executable, "-m", "stad.client.cli", "serve"),
            *("--model-dir", str(model_dir), "--address", self.target, "--device", device),
        ]
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        self._process = subprocess.Popen(self._command, stdout=subprocess.DEVNULL)
        try:
            self._wait_ready()
        except BaseException:
            self._stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        with Client(self.target, timeout_s=2, retries=0) as client:
            while True:
                assert self._process is not None
                if self._process.poll() is not None:
                    raise RuntimeError(f"`stad serve` exited with {self._process.returncode}")
                try:
                    if client.health().serving:
                        return
                except StadError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"`stad serve` did not answer at {self.target} in {READY_TIMEOUT_S:.0f} s"
                    )
                time.sleep(0.2)

    def _stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop()
