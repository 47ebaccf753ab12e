"""The chat's input: lines from a pipe or file (:class:`LineReader`), or typed at a terminal
with line editing and history (:class:`TerminalReader`, prompt_toolkit).

Both offer the same calls to the chat: ``readline``, ``wait_line``, ``next_line``,
``take_fresh``, ``mark_ahead``, ``ended``, ``echo`` and ``set_prompt``.

Reading a pipe: trio's I/O poller waits until fd 0 is readable, then one
``os.read`` takes what is there, so a wait can be cancelled without losing
input and the descriptor (which a terminal shares with the shell) is never
switched to non-blocking mode.  Descriptors the poller refuses (a regular file,
``/dev/null``) never block a read; they are read directly and count as
written ahead.

Reading a terminal: prompt_toolkit runs its prompt in one worker thread
(``trio.to_thread``; it has its own asyncio loop there) and hands each line
over; the prompt text follows the chat's state (``> ``, a question, nothing
while a turn runs).  What the chat prints meanwhile goes through
prompt_toolkit's ``patch_stdout``, above the line being typed.  Closing the
reader ends the prompt and restores the terminal before the chat exits.
"""

from __future__ import annotations

import os
import select
from collections import deque
from typing import Any

import attrs

# The line a terminal reader hands over for Ctrl-C (never a typed line: typed lines hold no \x03).
INTERRUPT = "\x03"
SLASH_COMMANDS = (
    "/call", "/read", "/pending", "/approve", "/deny", "/tools", "/stop", "/end", "/pause", "/resume",
    "/good", "/bad", "/memory", "/help", "/quit",
)


@attrs.define(eq=False)
class LineReader:
    """Lines from a file descriptor, read when input is there.

    A wait for input is ``trio.lowlevel.wait_readable``; the read after it (one
    ``os.read``) returns at once, so cancelling a wait loses nothing.  The lines
    already there when :meth:`mark_ahead` is called (at the start of a turn) are
    *written ahead*; lines arriving after are *fresh*.  :meth:`readline` takes
    lines in order; :meth:`take_fresh` takes the oldest fresh line, past those
    written ahead, which keep waiting.
    """

    fd: int
    # A terminal echoes what is typed; input from a pipe is echoed by the chat, for a readable transcript.
    echo: bool = attrs.field(default=attrs.Factory(lambda self: not os.isatty(self.fd), takes_self=True))
    _lines: deque[str] = attrs.field(factory=deque)
    _partial: bytes = b""
    _eof: bool = False
    # How many of the first buffered lines were written ahead.
    _ahead: int = 0
    # False once the poller refused the descriptor (regular files, /dev/null): reads never block there.
    _pollable: bool = True

    def set_prompt(self, text: str) -> None:
        """Pipes get their prompt written by the chat itself: nothing to do here."""

    @property
    def ended(self) -> bool:
        """End of input, every line taken."""
        return self._eof and not self._lines

    async def readline(self) -> str | None:
        """The next line without its newline; None at end of input."""
        await self.wait_line()
        return self.next_line()

    def next_line(self) -> str | None:
        """The next buffered line, written ahead or not; None when none is buffered."""
        if not self._lines:
            return None
        self._ahead = max(0, self._ahead - 1)
        return self._lines.popleft()

    def take_fresh(self) -> str | None:
        """The oldest buffered line that was not written ahead; None when there is none."""
        if len(self._lines) <= self._ahead:
            return None
        line = self._lines[self._ahead]
        del self._lines[self._ahead]
        return line

    def mark_ahead(self) -> None:
        """Read what input is there without waiting, and count every line so far as written ahead."""
        self._drain()
        self._ahead = len(self._lines) + (1 if self._partial else 0)

    async def wait_line(self, *, fresh: bool = False) -> None:
        """Until a line is buffered (a fresh one, with ``fresh``) or, without ``fresh``, the input ended.

        With ``fresh``, end of input (or a descriptor that cannot be polled) waits forever: lines
        written ahead, and the end of input after them, belong after the turn.
        """
        import trio

        while len(self._lines) <= (self._ahead if fresh else 0):
            if self._eof and not fresh:
                return
            if fresh and (self._eof or not self._pollable):
                await trio.sleep_forever()
            await self._fill()

    async def _fill(self) -> None:
        import trio

        if self._pollable:
            try:
                await trio.lowlevel.wait_readable(self.fd)
            except OSError:
                self._pollable = False
        self._read()

    def _drain(self) -> None:
        for _ in range(64):
            if self._eof:
                return
            if self._pollable:
                try:
                    ready, _, _ = select.select([self.fd], [], [], 0)
                except (OSError, ValueError):
                    return
                if not ready:
                    return
            if not self._read():
                return

    def _read(self) -> bool:
        """One read of what is there; False when nothing was (another reader took it)."""
        try:
            chunk = os.read(self.fd, 65536)
        except BlockingIOError:
            return False
        except OSError:
            chunk = b""
        if not chunk:
            self._eof = True
            if self._partial:
                self._lines.append(_decode(self._partial))
                self._partial = b""
            return True
        *complete, self._partial = (self._partial + chunk).split(b"\n")
        self._lines.extend(map(_decode, complete))
        return True


def _decode(line: bytes) -> str:
    return line.decode("utf-8", "replace").rstrip("\r")


@attrs.define(eq=False)
class TerminalReader:
    """Lines typed at a terminal, with editing, history and completion of the slash commands.

    Every line is fresh (typed after what came before); nothing is written ahead.
    End of input is Ctrl-D; Ctrl-C is handed over as :data:`INTERRUPT` (the chat stops
    the running turn, or leaves when none runs).
    """

    echo: bool = False
    _lines: deque[str] = attrs.field(factory=deque)
    _eof: bool = False
    _message: str = "> "
    _session: Any = None
    _changed: Any = None
    _stopped: Any = None

    def set_prompt(self, text: str) -> None:
        """The prompt shown in front of the line being typed (redrawn at once)."""
        self._message = text
        app = getattr(self._session, "app", None)
        if app is not None and app.is_running:
            app.invalidate()  # thread-safe in prompt_toolkit

    async def run(self, *, task_status: Any = None) -> None:
        """Prompt for lines until end of input or :meth:`close`; run it in the chat's nursery."""
        import trio
        from prompt_toolkit import PromptSession
        from prompt_toolkit.completion import WordCompleter
        from prompt_toolkit.history import InMemoryHistory

        self._changed = trio.Event()
        self._stopped = trio.Event()
        self._session = PromptSession(
            history=InMemoryHistory(),
            completer=WordCompleter(list(SLASH_COMMANDS), sentence=True),
            complete_while_typing=False,
        )
        token = trio.lowlevel.current_trio_token()
        if task_status is not None:
            task_status.started()
        try:
            await trio.to_thread.run_sync(self._prompt_loop, token, abandon_on_cancel=True)
        finally:
            self._stopped.set()

    def _prompt_loop(self, token: Any) -> None:
        """The worker thread: one prompt after another, each line handed to the trio side."""
        import trio

        while True:
            try:
                line: str | None = self._session.prompt(lambda: self._message)
            except EOFError:
                line = None
            except KeyboardInterrupt:
                line = INTERRUPT
            try:
                trio.from_thread.run_sync(self._deliver, line, trio_token=token)
            except trio.RunFinishedError:
                return
            if line is None:
                return

    def _deliver(self, line: str | None) -> None:
        import trio

        if line is None:
            self._eof = True
        else:
            self._lines.append(line)
        self._changed.set()
        self._changed = trio.Event()

    async def watch_interrupts(self) -> None:
        """SIGINT as Ctrl-C: while prompt_toolkit prints above the prompt the terminal is briefly
        in cooked mode, where Ctrl-C is a signal rather than a key; both mean :data:`INTERRUPT`."""
        import signal

        import trio

        with trio.open_signal_receiver(signal.SIGINT) as signals:
            async for _ in signals:
                self._deliver(INTERRUPT)

    async def close(self) -> None:
        """End the prompt (the terminal is restored) and wait, briefly, for its thread to finish."""
        import trio

        app = getattr(self._session, "app", None)
        if app is not None and app.is_running and app.loop is not None:
            app.loop.call_soon_threadsafe(lambda: app.exit(exception=EOFError()) if app.is_running else None)
            if self._stopped is not None:
                with trio.move_on_after(2):
                    await self._stopped.wait()

    @property
    def ended(self) -> bool:
        return self._eof and not self._lines

    async def readline(self) -> str | None:
        await self.wait_line()
        return self.next_line()

    def next_line(self) -> str | None:
        return self._lines.popleft() if self._lines else None

    def take_fresh(self) -> str | None:
        return self.next_line()

    def mark_ahead(self) -> None:
        """Typed lines are never ahead of the chat."""

    async def wait_line(self, *, fresh: bool = False) -> None:
        import trio

        while not self._lines:
            if self._eof:
                if fresh:
                    await trio.sleep_forever()
                return
            assert self._changed is not None, "start run() with nursery.start first"
            await self._changed.wait()
