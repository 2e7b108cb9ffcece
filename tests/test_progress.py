"""The shared progress display: live `\\r` redraws on a terminal, a few plain lines on a pipe."""

from __future__ import annotations

import io
import os
import select
from collections.abc import Iterator

import pytest

from stad.core.progress import Progress, duration


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_on_a_pipe_it_writes_a_few_plain_lines_and_no_carriage_returns(clock: FakeClock) -> None:
    stream = io.StringIO()
    with Progress("backfill pumps", total=1000, stream=stream, plain_every_s=30, clock=clock) as progress:
        for _ in range(100):  # 100 chunks, one a second
            clock.now += 1.0
            progress.advance(10)
    text = stream.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    # the first, one per 30 s of the 100 s, and the end (a milestone)
    assert 3 <= len(lines) <= 6, lines
    assert lines[-1].startswith("backfill pumps [") and "100% 1,000/1,000 steps" in lines[-1]


def test_on_a_pipe_milestones_always_show_and_the_last_state_is_not_lost(clock: FakeClock) -> None:
    stream = io.StringIO()
    progress = Progress(stream=stream, plain_every_s=30, clock=clock)
    progress.show("pretrain epoch 1/3", fraction=0.0, milestone=True)
    progress.show("pretrain epoch 1/3 loss 0.5", fraction=0.1)  # within 30 s, no milestone: held back
    progress.show("pretrain epoch 2/3", fraction=0.34, milestone=True)
    progress.show("pretrain epoch 2/3 loss 0.4", fraction=0.5)
    progress.close()
    assert stream.getvalue().splitlines() == [
        f"[{'-' * 24}]   0% pretrain epoch 1/3",
        f"[{'#' * 8}{'-' * 16}]  34% pretrain epoch 2/3",
        f"[{'#' * 12}{'-' * 12}]  50% pretrain epoch 2/3 loss 0.4",
    ]


@pytest.fixture
def pty_stream() -> Iterator[tuple[io.TextIOWrapper, int]]:
    master, slave = os.openpty()
    stream = open(slave, "w", encoding="utf-8", closefd=True)  # noqa: SIM115
    try:
        yield stream, master
    finally:
        stream.close()
        os.close(master)


def drain(master: int) -> str:
    """What the terminal received so far, with its own `\\r\\n` line ends made `\\n` again."""
    chunks = []
    while select.select([master], [], [], 0.5)[0]:
        chunks.append(os.read(master, 65536))
    return b"".join(chunks).decode().replace("\r\n", "\n")


def test_on_a_terminal_it_redraws_one_line(
    pty_stream: tuple[io.TextIOWrapper, int], clock: FakeClock
) -> None:
    stream, master = pty_stream
    with Progress("train", stream=stream, redraw_s=0.1, clock=clock) as progress:
        assert progress.is_terminal
        progress.show("a much longer first line", fraction=0.5)
        clock.now += 1
        progress.show("short", fraction=1.0)
    text = drain(master)
    assert text.count("\r") == 2  # each update redraws the same line
    assert text.rstrip("\r\n").endswith("short" + " " * (len("a much longer first line") - len("short")))
    assert text.endswith("\n") and text.count("\n") == 1  # the line ends once, at close


def test_on_a_terminal_redraws_are_throttled_but_the_last_one_shows(
    pty_stream: tuple[io.TextIOWrapper, int], clock: FakeClock
) -> None:
    stream, master = pty_stream
    with Progress("scoring", total=100, stream=stream, redraw_s=0.1, clock=clock) as progress:
        for _ in range(99):  # all at the same instant: only the first is drawn at once
            progress.advance(1)
    text = drain(master)
    assert text.count("\r") == 2  # the first, and the held-back newest at close
    assert "99/100 steps" in text


def test_duration_formats_minutes_and_hours() -> None:
    assert [duration(s) for s in (0, 59.6, 61, 3600, 3725)] == ["0:00", "1:00", "1:01", "1:00:00", "1:02:05"]
