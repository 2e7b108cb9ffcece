"""One progress display for every long operation (training, backfill), aware of where it writes.

On a terminal the line is redrawn in place with `\\r`, at most `redraw_s` apart. On a pipe or a
file it writes plain lines, and only a few: a milestone (a new epoch, the end), or the newest state
once `plain_every_s` passed since the last line. Torch-free; the client CLI and the InfluxDB task
both use it.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import Protocol, Self, TextIO

from stad.core.jobs import JobState, TrainingProgress

BAR_WIDTH = 24


def is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def duration(seconds: float) -> str:
    """`m:ss`, or `h:mm:ss` from an hour on."""
    whole = max(0, round(seconds))
    if whole >= 3600:
        return f"{whole // 3600:d}:{whole // 60 % 60:02d}:{whole % 60:02d}"
    return f"{whole // 60:d}:{whole % 60:02d}"


def bar(fraction: float, width: int = BAR_WIDTH) -> str:
    """`[#####-----]  40%` for a fraction in [0, 1]."""
    share = min(1.0, max(0.0, fraction))
    filled = round(share * width)
    return f"[{'#' * filled}{'-' * (width - filled)}] {share:4.0%}"


class Progress:
    """A live progress line on `stream` (stderr by default); a context manager that ends the line.

    Two ways to feed it: `advance(n)` counts work done out of `total` and shows the rate and an
    ETA; `show(text, fraction=...)` shows a caller-made line (training status from the server).
    """

    def __init__(
        self,
        label: str = "",
        *,
        total: int | None = None,
        unit: str = "steps",
        stream: TextIO | None = None,
        redraw_s: float = 0.1,
        plain_every_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.total = total
        self.unit = unit
        self.done = 0
        self._stream = stream if stream is not None else sys.stderr
        self._tty = is_terminal(self._stream)
        self._redraw_s = redraw_s
        self._plain_every_s = plain_every_s
        self._clock = clock
        self._started = clock()
        self._pending: str | None = None  # the newest line, when not yet written
        self._written_at: float | None = None
        self._last_written = ""
        self._drawn_width = 0  # the width of the line on a terminal, 0 when none is open

    @property
    def is_terminal(self) -> bool:
        return self._tty

    def advance(self, amount: int) -> None:
        """Count `amount` more units done; reaching `total` is a milestone."""
        self.done += amount
        total = self.total
        elapsed = self._clock() - self._started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.done:,}/{total:,} {self.unit}" if total else f"{self.done:,} {self.unit}"]
        if rate > 0:
            parts.append(f"({rate:,.0f}/s)")
        if total and rate > 0 and self.done < total:
            parts.append(f"ETA {duration((total - self.done) / rate)}")
        fraction = min(1.0, self.done / total) if total else None
        self.show("  ".join(parts), fraction=fraction, milestone=bool(total) and self.done >= (total or 0))

    def show(
        self, text: str, *, fraction: float | None = None, label: str | None = None, milestone: bool = False
    ) -> None:
        """Show `label [bar] text` (`label` replaces the display's own); a milestone is always written."""
        shown_bar = bar(fraction) if fraction is not None else ""
        line = " ".join(part for part in (self.label if label is None else label, shown_bar, text) if part)
        now = self._clock()
        every = self._redraw_s if self._tty else self._plain_every_s
        due = self._written_at is None or now - self._written_at >= every
        if milestone or due:
            self._write(line, now)
        else:
            self._pending = line

    def close(self) -> None:
        """Write the newest line if it is not out yet, and end the terminal line."""
        if self._pending is not None:
            self._write(self._pending, self._clock())
        if self._drawn_width:
            self._stream.write("\n")
            self._stream.flush()
            self._drawn_width = 0

    def _write(self, line: str, now: float) -> None:
        self._pending = None
        self._written_at = now
        if self._tty:
            # pad over what is left of a longer previous line
            self._stream.write("\r" + line.ljust(self._drawn_width))
            self._drawn_width = max(len(line), 1)
        elif line != self._last_written:
            self._stream.write(line + "\n")
        self._last_written = line
        self._stream.flush()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class TrainingStatus(Protocol):
    """What the display reads of a training job's status (stad.client.JobStatus)."""

    @property
    def state(self) -> JobState: ...
    @property
    def progress(self) -> TrainingProgress | None: ...


# Before this share of a job is done, its ETA is mostly start-up noise.
ETA_FROM_FRACTION = 0.05


class TrainingDisplay:
    """A training job's statuses on a Progress: `phase epoch e/n [bar] %  loss  val  ETA`.

    Each new state, phase or epoch is a milestone, so a pipe gets a line per epoch.
    """

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._key: tuple[object, ...] | None = None

    def update(self, status: TrainingStatus) -> None:
        steps = status.progress
        if steps is None or steps.epochs <= 0:
            key: tuple[object, ...] = (status.state,)
            self._progress.show(str(status.state.value), milestone=key != self._key)
        else:
            if steps.steps_total > 0:
                fraction = min(1.0, steps.step / steps.steps_total)
            else:
                fraction = min(1.0, steps.epoch / steps.epochs)
            eta = duration(steps.eta_s) if fraction >= ETA_FROM_FRACTION else "-"
            state = "" if status.state is JobState.RUNNING else f"  {status.state.value}"
            key = (status.state, steps.phase, steps.epoch)
            self._progress.show(
                f"loss {_loss(steps.train_loss)}  val {_loss(steps.val_loss)}  ETA {eta}{state}",
                fraction=fraction,
                label=f"{steps.phase or 'train'} epoch {steps.epoch}/{steps.epochs}",
                milestone=key != self._key,
            )
        self._key = key


def _loss(value: float) -> str:
    """A loss for the line; "-" before the first one (or with no validation split)."""
    return "-" if math.isnan(value) else f"{value:.4f}"


__all__ = ["Progress", "TrainingDisplay", "bar", "duration", "is_terminal"]
