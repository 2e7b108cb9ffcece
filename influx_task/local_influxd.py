"""A throwaway `influxd` (1.x) on loopback with its own data directory (tests, bench, demo).

Its config binds every listener to 127.0.0.1 (the packaged default listens on
all interfaces) and turns off reporting, self-monitoring and query logging.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

_CONFIG = """\
reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"

[meta]
  dir = "{root}/meta"

[data]
  dir = "{root}/data"
  wal-dir = "{root}/wal"
  query-log-enabled = false

[monitor]
  store-enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:{http_port}"
  log-enabled = false

[subscriber]
  enabled = false

[continuous_queries]
  enabled = false
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def influxd_path() -> str | None:
    return shutil.which("influxd") or ("/usr/bin/influxd" if Path("/usr/bin/influxd").exists() else None)


class Influxd:
    """Start/stop one influxd; the data directory and ports survive a restart."""

    def __init__(self, root: Path, *, binary: str) -> None:
        self.root = root
        self.binary = binary
        root.mkdir(parents=True, exist_ok=True)
        self.http_port = free_port()
        self.rpc_port = free_port()
        self.config_path = root / "influxd.conf"
        self.config_path.write_text(
            _CONFIG.format(root=root, rpc_port=self.rpc_port, http_port=self.http_port)
        )
        self.log_path = root / "influxd.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def __enter__(self) -> Influxd:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout_s: float = 30.0) -> None:
        if self._process is not None:
            raise RuntimeError("influxd is already running")
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        self._process = subprocess.Popen(
            [self.binary, "-config", str(self.config_path)], stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"influxd exited early:\n{self.log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + "/ping", timeout=1) as response:
                    if response.status == 204:
                        return
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.05)  # polling a condition, bounded by the deadline
        self.stop()
        raise RuntimeError(f"influxd did not answer /ping within {timeout_s}s")

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=10)
        self._process = None

    def query(self, statement: str, database: str | None = None) -> dict[str, object]:
        """POST one InfluxQL statement (CREATE/DROP DATABASE and the like)."""
        params = {"q": statement, "epoch": "ns", **({"db": database} if database else {})}
        request = urllib.request.Request(self.url + "/query?" + urllib.parse.urlencode(params), method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            result: dict[str, object] = json.loads(response.read())
            return result
