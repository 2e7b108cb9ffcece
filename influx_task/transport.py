"""HTTP transport to InfluxDB: one connection pool, auth headers, errors with status.

Exceptions:

    InfluxError                 any failed request (status 0 = no response)
    └── InfluxUnavailable       connection refused/reset, timeout, 5xx, 429: retryable
"""

from __future__ import annotations

import base64
import email.utils
import time
from collections.abc import Mapping
from urllib.parse import urlencode

import urllib3

from stad.influx_task.config import Connection


class InfluxError(Exception):
    """A request to InfluxDB failed; `status` is the HTTP status (0 when none came back)."""

    def __init__(self, message: str, *, status: int = 0, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s


class InfluxUnavailable(InfluxError):
    """InfluxDB is down, overloaded or rate limiting: worth retrying."""


def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, InfluxUnavailable)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class Transport:
    """Sends requests to one InfluxDB with the connection's credentials."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._pool = urllib3.PoolManager(
            num_pools=4,
            maxsize=4,
            retries=False,
            timeout=urllib3.Timeout(total=connection.timeout_ms / 1000),
        )
        headers: dict[str, str] = {}
        if connection.token:
            headers["Authorization"] = f"Token {connection.token}"
        elif connection.username:
            pair = f"{connection.username}:{connection.password or ''}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        self._headers = headers

    def close(self) -> None:
        self._pool.clear()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str],
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> bytes:
        """Send one request; return the body of a 2xx answer, raise InfluxError otherwise."""
        url = self.connection.url.rstrip("/") + path
        try:
            response = self._pool.urlopen(
                method,
                f"{url}?{urlencode(params)}",
                body=body,
                headers={**self._headers, **(headers or {})},
            )
        except urllib3.exceptions.HTTPError as exc:
            raise InfluxUnavailable(f"{method} {url}: {exc}") from exc
        status = response.status
        if 200 <= status < 300:
            return bytes(response.data)
        text = response.data.decode(errors="replace").strip()[:500]
        message = f"{method} {path} -> HTTP {status}: {text}"
        if status == 429 or status >= 500:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise InfluxUnavailable(message, status=status, retry_after_s=retry_after)
        raise InfluxError(message, status=status)
