"""The children of `broker dev` kept running: one that exits is started again, the others never notice.

A child that exits (a crash, a SIGKILL, a scheduler giving up on a Redis stall) is started again after a delay
that doubles with each failed start, from 1 s up to 30 s, and starts again from 1 s once the child has run for
30 s. Each outage is told twice, on stderr: once when the child goes (why, and the end of its log) and once
when it is back (its probe passes: a port or URL answers, a worker is registered), however many starts that
took. Nothing here ever stops the stack: only SIGINT/SIGTERM to `broker dev` does (see `app.devstack.dev`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from app.devstack.processes import ManagedProcess

FIRST_DELAY = 1.0
MAX_DELAY = 30.0
STEADY_SECONDS = 30.0  # a child up this long is healthy again: its next exit waits FIRST_DELAY
SETTLE_SECONDS = 3.0  # a child without a probe is back once it has run this long
POLL_SECONDS = 0.2
LOG_TAIL_LINES = 6

Probe = Callable[[ManagedProcess], bool]
Say = Callable[[str], None]
Clock = Callable[[], float]


class State(Enum):
    UP = "up"
    DOWN = "down"  # exited; starts again at `restart_at`
    STARTING = "starting"  # started again; not yet back


@dataclass
class Supervised:
    process: ManagedProcess
    probe: Probe | None = None  # "it is back"; None: it has run SETTLE_SECONDS
    state: State = State.UP
    delay: float = FIRST_DELAY
    started_at: float = 0.0
    restart_at: float = 0.0
    went_at: float = 0.0
    starts: int = 0  # in the current outage

    @property
    def name(self) -> str:
        return self.process.name


class Supervisor:
    """`step()` moves every child one transition on; `run()` steps until interrupted (by a signal)."""

    def __init__(self, children: list[Supervised], say: Say, clock: Clock = time.monotonic) -> None:
        self.children = children
        self.say = say
        self.clock = clock
        now = clock()
        for child in children:
            child.started_at = now

    def run(self, every: Callable[[], None] | None = None) -> None:
        """Supervise until an exception (the stop signal's) ends it; `every` runs once per round."""
        while True:
            self.step()
            if every is not None:
                every()
            time.sleep(POLL_SECONDS)

    def step(self) -> None:
        for child in self.children:
            self._step(child, self.clock())

    def _step(self, child: Supervised, now: float) -> None:
        alive = child.process.alive()
        if child.state is State.UP:
            if alive:
                if now - child.started_at >= STEADY_SECONDS:
                    child.delay = FIRST_DELAY
                return
            self._went(child, now)
        elif child.state is State.DOWN:
            if now >= child.restart_at:
                self._start(child, now)
        elif not alive:  # STARTING, and gone again: same outage, longer wait, nothing said
            self._schedule(child, now)
        elif self._is_back(child, now):
            child.state = State.UP
            self.say(
                f"{_clock()} {child.name} is back after {now - child.went_at:.1f} s "
                f"({child.starts} start{'s' if child.starts != 1 else ''})"
            )

    def _went(self, child: Supervised, now: float) -> None:
        if now - child.started_at >= STEADY_SECONDS:
            child.delay = FIRST_DELAY
        child.went_at, child.starts = now, 0
        tail = "\n".join(f"    {line}" for line in child.process.tail(LOG_TAIL_LINES).splitlines())
        self.say(
            f"{_clock()} {child.name} exited ({child.process.exit_reason()}); starting it again in "
            f"{child.delay:g} s, the rest of the stack keeps running; {child.process.log_path} ends with:\n{tail}"
        )
        self._schedule(child, now)

    def _schedule(self, child: Supervised, now: float) -> None:
        child.state = State.DOWN
        child.restart_at = now + child.delay
        child.delay = min(child.delay * 2, MAX_DELAY)

    def _start(self, child: Supervised, now: float) -> None:
        child.starts += 1
        try:
            child.process.restart()
        except OSError as error:  # the program itself is gone (a venv rebuilt under us): wait and retry
            with child.process.log_path.open("a") as log:
                log.write(f"broker dev: cannot start {child.name}: {error}\n")
            self._schedule(child, now)
            return
        child.state, child.started_at = State.STARTING, now

    def _is_back(self, child: Supervised, now: float) -> bool:
        if child.probe is None:
            return now - child.started_at >= SETTLE_SECONDS
        return child.probe(child.process)


def _clock() -> str:
    return datetime.now().strftime("%H:%M:%S")
