"""A watchdog for custom agents' code: one that holds the event loop too long without awaiting is ended.

Trio cannot cancel code that never yields: a Python agent stuck in a loop with
no ``await`` (``while True: pass``, a huge computation) would stall every
session of the server.  :func:`guarded` drives the agent's coroutine one step
(one ``send``, from one ``await`` to the next) at a time and arms a real-time
timer (``SIGALRM``) for each step; a step that lasts :data:`MAX_BLOCKING_S`
gets :class:`AgentBlocked` raised inside it, which ends the turn with an error
while the server goes on.  ``AgentBlocked`` derives from ``BaseException``, so
an agent's ``except Exception`` does not swallow it.

Limits: the timer works only in the main thread (where ``sconnect serve`` runs
the engine; elsewhere no watchdog is armed), and cannot interrupt one long call
into C code (a regular expression, ``time.sleep``): the exception arrives when
that call returns.  Nested agents (a delegation) run inside the outer agent's
step, so the outer timer covers them.  A step is bounded as a whole, engine code
it calls included: a 5 s step is an agent's doing.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Coroutine, Generator
from types import FrameType
from typing import Any, TypeVar

# The longest one step of an agent may hold the event loop.
MAX_BLOCKING_S = 5.0

T = TypeVar("T")


class AgentBlocked(BaseException):
    """Raised into an agent's step that held the event loop for ``MAX_BLOCKING_S`` or longer."""


_armed = False
_installed = False
_previous: Any = None


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    if _armed:
        raise AgentBlocked(f"held the server for {MAX_BLOCKING_S:g}s without awaiting")
    if callable(_previous):
        _previous(signum, frame)


def _arm() -> bool:
    """Start the timer for one step; False when it cannot (not the main thread) or an outer step has it."""
    global _armed, _installed, _previous
    if _armed or threading.current_thread() is not threading.main_thread():
        return False
    if not _installed:
        _previous = signal.signal(signal.SIGALRM, _on_alarm)
        _installed = True
    _armed = True
    signal.setitimer(signal.ITIMER_REAL, MAX_BLOCKING_S)
    return True


def _disarm() -> None:
    global _armed
    signal.setitimer(signal.ITIMER_REAL, 0)
    _armed = False


class guarded:  # noqa: N801 - used like a function: ``await guarded(coro)``
    """Await ``coro`` with every one of its steps under the watchdog."""

    def __init__(self, coro: Coroutine[Any, Any, T]) -> None:
        self._coro = coro

    def __await__(self) -> Generator[Any, Any, Any]:
        coro = self._coro
        value: Any = None
        error: BaseException | None = None
        while True:
            armed = _arm()
            try:
                yielded = coro.throw(error) if error is not None else coro.send(value)
            except StopIteration as done:
                return done.value
            finally:
                if armed:
                    _disarm()
            try:
                value, error = (yield yielded), None
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:
                value, error = None, exc
