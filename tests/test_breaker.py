"""The main engine's circuit breaker (engine/breaker.py), on a clock the test moves."""

from __future__ import annotations

import pytest

from ocrserve.engine.breaker import Breaker, BreakerOpen, State


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Boom(Exception):
    pass


class BadInput(Exception):
    pass


def fail() -> None:
    raise Boom


def refuse() -> None:
    raise BadInput


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def moves() -> list[State]:
    return []


@pytest.fixture
def breaker(clock: Clock, moves: list[State]) -> Breaker:
    return Breaker(
        failures=3,
        reset_s=30.0,
        is_failure=lambda e: isinstance(e, Boom),
        on_change=moves.append,
        clock=clock,
    )


def test_it_opens_after_consecutive_failures_only(breaker: Breaker, moves: list[State]) -> None:
    for _ in range(2):
        with pytest.raises(Boom):
            breaker.call(fail)
    assert breaker.call(len, "ok") == 2  # a success resets the count
    for _ in range(2):
        with pytest.raises(Boom):
            breaker.call(fail)
    assert breaker.state == "closed"
    with pytest.raises(Boom):
        breaker.call(fail)
    assert breaker.state == "open" and moves == ["open"]


def test_bad_input_neither_counts_nor_resets(breaker: Breaker) -> None:
    for _ in range(2):
        with pytest.raises(Boom):
            breaker.call(fail)
    for _ in range(5):
        with pytest.raises(BadInput):
            breaker.call(refuse)
    assert breaker.state == "closed"
    with pytest.raises(Boom):
        breaker.call(fail)
    assert breaker.state == "open"


def test_open_calls_nothing_then_one_trial_closes_it(
    breaker: Breaker, clock: Clock, moves: list[State]
) -> None:
    for _ in range(3):
        with pytest.raises(Boom):
            breaker.call(fail)
    called = []
    with pytest.raises(BreakerOpen):
        breaker.call(called.append, 1)
    clock.now += 29.9
    with pytest.raises(BreakerOpen):
        breaker.call(called.append, 2)
    assert called == []
    clock.now += 0.2
    breaker.call(called.append, 3)  # the trial
    assert called == [3] and breaker.state == "closed"
    assert moves == ["open", "half-open", "closed"]


def test_a_failed_trial_opens_it_again_for_another_period(breaker: Breaker, clock: Clock) -> None:
    for _ in range(3):
        with pytest.raises(Boom):
            breaker.call(fail)
    clock.now += 31
    with pytest.raises(Boom):
        breaker.call(fail)  # the trial, failing once is enough
    assert breaker.state == "open"
    clock.now += 29
    with pytest.raises(BreakerOpen):
        breaker.call(len, "x")


def test_only_one_trial_runs_at_a_time(breaker: Breaker, clock: Clock) -> None:
    for _ in range(3):
        with pytest.raises(Boom):
            breaker.call(fail)
    clock.now += 31

    def trial() -> str:
        with pytest.raises(BreakerOpen):  # a second call while the trial runs is refused
            breaker.call(len, "x")
        return "done"

    assert breaker.call(trial) == "done"
    assert breaker.state == "closed"
