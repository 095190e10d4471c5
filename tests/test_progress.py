"""Progress output: a tqdm bar on a terminal, a few plain log lines in a log file, nothing when off."""

from __future__ import annotations

import logging
import re
import sys
import time

import pytest

from cnnscope import progress
from cnnscope.progress import Progress, track

LINE = re.compile(r"^(?P<desc>.+): (?P<n>\d+)/(?P<total>\d+) \((?P<pct>\d+)%\) (?P<s>[\d.]+) s, [\d.]+ it/s$")


class Clock:
    """A monotonic clock that moves only when told, so the 30 s rule is tested without waiting."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        assert record.name == "cnnscope" and record.levelno == logging.INFO
        self.lines.append(record.getMessage())


@pytest.fixture
def tty(monkeypatch, capsys):
    """Set whether stderr (capsys's, which the test reads) claims to be a terminal; at first it does not,
    as when a step's output goes to a log file. Patched in the test body too: pytest swaps sys.stderr
    between the setup and call phases, so a stand-in installed by a fixture would not survive."""

    def set_tty(value: bool) -> None:
        monkeypatch.setattr(sys.stderr, "isatty", lambda: value)

    set_tty(False)
    return set_tty


@pytest.fixture
def lines(monkeypatch, tty) -> list[str]:
    """The messages logged on the ``cnnscope`` logger, whatever logging config an earlier test left."""
    logger = logging.getLogger("cnnscope")
    handler = Lines()
    monkeypatch.setattr(logger, "disabled", False)
    monkeypatch.setattr(logger, "propagate", False)
    level = logger.level
    logger.setLevel(logging.INFO)  # setLevel, not setattr: it clears the logger's isEnabledFor cache
    logger.addHandler(handler)
    yield handler.lines
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.fixture
def clock(monkeypatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(time, "monotonic", c)
    return c


def test_log_lines_every_tenth_plus_final(lines, capsys):
    assert list(track(range(1000), "train convnet")) == list(range(1000))
    assert 10 <= len(lines) <= 11, lines
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), lines
    assert {m["desc"] for m in parsed} == {"train convnet"}
    assert {m["total"] for m in parsed} == {"1000"}
    done = [int(m["n"]) for m in parsed]
    assert done == sorted(done) and done[-1] == 1000
    pct = [int(m["pct"]) for m in parsed]
    assert pct[:9] == [10, 20, 30, 40, 50, 60, 70, 80, 90]
    assert lines[-1].startswith("train convnet: 1000/1000 (100%) ")
    assert capsys.readouterr().err == ""  # no bar, no carriage returns in the log


def test_log_line_after_30_s_between_tenth_steps(lines, clock):
    for _ in track(range(1000), "slow"):
        clock.now += 1.0  # 100 s per 10% step: the 30 s rule fires first
        if len(lines) == 2:
            break
    assert lines[0] == "slow: 30/1000 (3%) 30.0 s, 1.0 it/s"
    assert lines[1] == "slow: 60/1000 (6%) 60.0 s, 1.0 it/s"


def test_unknown_total_logs_by_time_only(lines, clock):
    def items():
        for i in range(100):
            clock.now += 1.0
            yield i

    assert sum(track(items(), "scan")) == sum(range(100))
    assert lines[:3] == [
        "scan: 30 it 30.0 s, 1.0 it/s",
        "scan: 60 it 60.0 s, 1.0 it/s",
        "scan: 90 it 90.0 s, 1.0 it/s",
    ]
    assert lines[3] == "scan: 100 it 100.0 s, 1.0 it/s" and len(lines) == 4


def test_initial_counts_as_done(lines, clock):
    for _ in track(range(300, 1000), "train convnet", initial=300):
        clock.now += 0.01
    # the default total is the whole (300 done + 700 to go); the first line is the next 10% step, and
    # the rate covers only this run's 100 steps in 1 s, not the 400 counted.
    assert lines[0] == "train convnet: 400/1000 (40%) 1.0 s, 100.0 it/s"
    assert [LINE.match(line)["pct"] for line in lines] == ["40", "50", "60", "70", "80", "90", "100"]


def test_explicit_total_with_initial(lines):
    list(track(range(950, 1000), "train convnet", initial=950, total=1000))
    assert len(lines) == 1 and lines[0].startswith("train convnet: 1000/1000 (100%) ")


@pytest.mark.parametrize("terminal", [False, True])
def test_disabled_writes_nothing(lines, tty, capsys, terminal):
    tty(terminal)
    items = ["a", "b", "c"]
    assert list(track(items, "quiet", enabled=False)) == items
    with Progress("quiet", 10, enabled=False) as bar:
        bar.update(10)
    assert lines == [] and capsys.readouterr().err == ""


def test_terminal_gets_tqdm_bar(lines, tty, capsys):
    tty(True)
    assert list(track(range(50), "train convnet", initial=10, total=60)) == list(range(50))
    out = capsys.readouterr().err
    assert "\r" in out and "train convnet: 100%" in out and "60/60" in out and "it/s" in out
    assert lines == []


def test_manual_updates_count_bytes(lines, clock):
    with Progress("broden.zip", 3_000_000, initial=1_000_000, unit="B", unit_scale=True) as bar:
        for _ in range(20):
            clock.now += 0.5
            bar.update(100_000)
        assert bar.n == 3_000_000
    assert lines[0] == "broden.zip: 1.2 MB/3.0 MB (40%) 1.0 s, 200.0 kB/s"
    assert lines[-1] == "broden.zip: 3.0 MB/3.0 MB (100%) 10.0 s, 200.0 kB/s"
    assert len(lines) == 7  # 40, 50, 60, 70, 80, 90 % and the final line


def test_manual_updates_on_terminal(lines, tty, capsys):
    tty(True)
    with Progress("broden.zip", 2_000_000, unit="B", unit_scale=True) as bar:
        bar.update(2_000_000)
    assert "2.00M/2.00M" in capsys.readouterr().err and lines == []


def test_final_line_when_loop_stops_early(lines):
    for i in track(range(1000), "tally"):
        if i == 250:
            break
    assert lines[-1].startswith("tally: 250/1000 (25%) ")


def test_constants():
    assert progress.LOG_INTERVAL_S == 30 and progress.LOG_STEP_PERCENT == 10
