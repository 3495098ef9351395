"""The main engine's circuit breaker: closed, open after ``failures`` consecutive failures,
one trial call ``reset_s`` later (half-open), closed again when the trial succeeds.

Written here, not taken from a library, on purpose. pybreaker holds its lock for the whole
call it guards, so the batcher's lanes, which share the breaker, ran one at a time behind it
(tests/test_task_lifecycle.py's two-lane progress test hung until its deadline); and it imports
redis and tornado when it is imported (its optional state stores): every server and function
would load a cache client it does not use (tests/test_startup.py holds them to none) and 90 ms
more of cold start. Here the lock guards the state only, never the call.
circuitbreaker (fabfuel) keeps no lock, where the batcher's lanes share one breaker, and its
``call`` never checks whether the circuit is open. What is needed is this, under one lock.

>>> breaker = Breaker(failures=5, reset_s=30.0, is_failure=lambda e: True)
>>> breaker.call(len, "abc"), breaker.state
(3, 'closed')
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Literal, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

State = Literal["closed", "open", "half-open"]


class BreakerOpen(Exception):
    """The circuit is open: the call was not made."""


class Breaker:
    """Thread-safe. ``is_failure`` says which errors count (the caller's bad input does not:
    it neither counts nor resets the count); ``on_change`` hears each new state."""

    def __init__(
        self,
        *,
        failures: int,
        reset_s: float,
        is_failure: Callable[[BaseException], bool],
        on_change: Callable[[State], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failures < 1 or reset_s <= 0:
            raise ValueError(f"failures >= 1 and reset_s > 0, not {failures!r}, {reset_s!r}")
        self.failures = failures
        self.reset_s = reset_s
        self.is_failure = is_failure
        self.on_change = on_change or (lambda state: None)
        self._clock = clock
        self._lock = threading.Lock()
        self._state: State = "closed"
        self._count = 0  # consecutive failures while closed
        self._opened = 0.0
        self._trial = False  # a half-open trial call is running

    @property
    def state(self) -> State:
        with self._lock:
            return self._state

    def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(*args, **kwargs)``, or :class:`BreakerOpen` without calling it while open
        (and while another call is the half-open trial)."""
        trial = self._admit()
        try:
            result = fn(*args, **kwargs)
        except BaseException as e:
            self._settle(trial, failed=self.is_failure(e), succeeded=False)
            raise
        self._settle(trial, failed=False, succeeded=True)
        return result

    def _admit(self) -> bool:
        """Whether this call is the half-open trial; raises when it may not run."""
        with self._lock:
            if self._state == "closed":
                return False
            if self._trial or self._clock() < self._opened + self.reset_s:
                raise BreakerOpen(f"circuit open: {self._count} consecutive failures")
            self._trial = True
            self._move("half-open")
            return True

    def _settle(self, trial: bool, *, failed: bool, succeeded: bool) -> None:
        with self._lock:
            if trial:
                self._trial = False
            if succeeded:
                self._count = 0
                self._move("closed")
            elif failed:
                self._count += 1
                if trial or self._count >= self.failures:
                    self._opened = self._clock()
                    self._move("open")
            elif trial:  # the trial was refused as bad input: it says nothing; wait again
                self._move("open")

    def _move(self, state: State) -> None:
        if state != self._state:
            self._state = state
            self.on_change(state)
