"""The supervisor's rules on a fake clock: a child that exits is started again after 1 s, 2 s, 4 s … at most
30 s while it keeps failing, from 1 s again once it has run 30 s; each outage is told once when it goes and
once when it is back; the other children are never touched."""

from __future__ import annotations

import itertools
from pathlib import Path

from app.devstack.supervisor import MAX_DELAY, SETTLE_SECONDS, Supervised, Supervisor


class FakeProcess:
    """What the supervisor uses of a ManagedProcess; `restart` counts, `die` makes it exit."""

    def __init__(self, name: str, log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self.log_path.write_text("last words\n")
        self.running = True
        self.restarts = 0
        self.fail_starts = 0  # the next starts that exit at once

    def alive(self) -> bool:
        return self.running

    def die(self) -> None:
        self.running = False

    def restart(self) -> None:
        self.restarts += 1
        if self.fail_starts:
            self.fail_starts -= 1
            self.running = False
        else:
            self.running = True

    def exit_reason(self) -> str:
        return "killed by SIGKILL"

    def tail(self, lines: int = 30) -> str:
        return self.log_path.read_text()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def supervise(tmp_path: Path, probe_answers: dict[str, bool] | None = None):
    clock, said = Clock(), []
    worker, api = FakeProcess("worker", tmp_path), FakeProcess("api", tmp_path)
    answers = probe_answers if probe_answers is not None else {}
    children = [
        Supervised(worker),  # type: ignore[arg-type]
        Supervised(api, lambda _: answers.get("api", True)),  # type: ignore[arg-type]
    ]
    return Supervisor(children, said.append, clock), clock, said, worker, api


def run_for(supervisor: Supervisor, clock: Clock, seconds: float, step: float = 0.1) -> None:
    for _ in range(round(seconds / step)):
        clock.now += step
        supervisor.step()


def test_a_killed_child_is_started_again_after_a_second_and_said_once_each_way(tmp_path: Path):
    supervisor, clock, said, worker, api = supervise(tmp_path)
    run_for(supervisor, clock, 5)
    assert said == []
    worker.die()
    run_for(supervisor, clock, 0.95)
    assert worker.restarts == 0
    assert len(said) == 1 and said[0].split(" ", 1)[1].startswith("worker exited (killed by SIGKILL)")
    assert "starting it again in 1 s" in said[0] and "last words" in said[0]
    run_for(supervisor, clock, 0.2)
    assert worker.restarts == 1
    run_for(supervisor, clock, SETTLE_SECONDS + 1)
    assert len(said) == 2 and "worker is back after" in said[1] and "(1 start)" in said[1]
    assert api.restarts == 0  # the others are never touched


def test_a_child_that_keeps_failing_waits_longer_each_time_up_to_30_s_and_is_told_once(tmp_path: Path):
    supervisor, clock, said, worker, _ = supervise(tmp_path)
    worker.fail_starts = 7
    worker.die()
    starts_at = []
    for _ in range(2000):  # 200 s of 0.1 s steps
        before = worker.restarts
        run_for(supervisor, clock, 0.1)
        if worker.restarts != before:
            starts_at.append(clock.now)
    gaps = [round(b - a) for a, b in itertools.pairwise(starts_at)]
    assert gaps[:6] == [2, 4, 8, 16, MAX_DELAY, MAX_DELAY]
    assert worker.restarts == 8 and worker.alive()
    assert len(said) == 2, said  # gone, back: nothing for the failed starts in between
    assert "(8 starts)" in said[1]


def test_the_delay_starts_from_one_second_again_after_30_s_up(tmp_path: Path):
    supervisor, clock, said, worker, _ = supervise(tmp_path)
    worker.fail_starts = 3
    worker.die()
    run_for(supervisor, clock, 40)
    assert worker.alive() and worker.restarts == 4
    run_for(supervisor, clock, 31)
    worker.die()
    run_for(supervisor, clock, 0.5)
    assert "starting it again in 1 s" in said[-1]


def test_back_means_the_probe_answers(tmp_path: Path):
    answers = {"api": False}
    supervisor, clock, said, _, api = supervise(tmp_path, answers)
    api.die()
    run_for(supervisor, clock, 10)
    assert api.restarts == 1 and len(said) == 1  # running, but not answering yet: not back
    answers["api"] = True
    run_for(supervisor, clock, 0.2)
    assert len(said) == 2 and "api is back" in said[1]
