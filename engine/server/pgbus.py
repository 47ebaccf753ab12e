"""Several instances on one PostgreSQL database behave as one service: the approval bus.

What crosses instances, over LISTEN/NOTIFY on one channel (``engine.pg.listen``/``notify``;
payloads are small JSON objects naming the sending instance):

- ``asked``: an action on instance A waits for approval. Every other instance reads it
  from the store (its arguments as stored: secrets redacted) and pushes its
  ``agent_action`` to the connected clients who may answer it (admins for level 2, the
  requester's own connections for level 1), and lists it for ``action_list`` and for
  approvers who connect later (it is kept in the broker with ``origin`` set).
- An answer, on any instance, is decided in the database first: the store's conditional
  UPDATE (``decide_action``) lets exactly one decider win, whichever instances race; the
  loser gets ``already_decided`` (or ``expired``). The winner, when the turn waits
  elsewhere, sends ``decided``, which wakes it there.
- ``finished``: the waiting instance is done with the action (answered, expired,
  cancelled): the others drop their copies.
- ``control`` / ``control_seen`` / ``control_done``: a stop, cancel, pause or resume
  sent on B for a session running on A. B checks in the store that the session is the
  sender's, asks, and answers its client with the ``agent_state`` A reports once the
  command took effect (or A's error), or ``not_found`` when no instance answers (at
  once, without asking, when the store says the session terminated).
- Per-subject limits: each instance rewrites its live connections and sessions per
  subject in the ``presence`` table every heartbeat (``heartbeat_s``, :data:`HEARTBEAT_S`
  by default) and reads the others' fresh rows; the limits add them to the local counts.
  Best effort: two instances admitting the same subject within one heartbeat can
  overshoot a limit by what they admitted in between.
- Which configuration each instance serves: its heartbeat row (subject ``''``) carries
  its policy revision, when that configuration was loaded, its program version and host
  name; ``sconnect check`` lists the live instances from it (:func:`live_instances`) and
  says when their revisions differ (a rollout in progress, or an instance left behind).
- An instance that died: its heartbeat row (subject ``''``) goes stale. Each row says
  how long it stays fresh (``stale_after``: :data:`STALE_BEATS` of its writer's
  heartbeats), so instances with different heartbeats judge each other by the writer's
  own pace (a row without it, from an older version: :data:`PRESENCE_STALE_S`). An
  answer to an action it was waiting for is then refused (``already_decided``: the
  action is marked ``cancelled`` in the store, nothing runs), instead of approving what
  nobody will run; its copies elsewhere go at their expiry, and its own restart cancels
  its orphans.

Nothing depends on a notification arriving: NOTIFY is not queued for a listener that is
away (reconnecting, or an instance starting), so the database stays the authority. A
waiting turn whose ``decided`` was lost finds the decision in the store when its wait
ends; copies whose ``finished`` was lost are dropped at their expiry; after
(re)connecting, an instance reloads every pending action from the store.

Errors: a notification that cannot be sent is logged (see above: correctness does not
depend on it); a lost listening connection is re-opened with a backoff; the server never
stops for the bus.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections import Counter
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio

from ..grants import plan
from ..pg import Database, PgError, listen, notify
from ..protocol import (
    ActionKind,
    AgentAction,
    AgentControl,
    AgentState,
    Approver,
    ErrorCode,
    Executor,
    LifecycleState,
    ProtocolError,
    Remember,
    new_id,
)
from .approvals import BusHub, ControlPeer, PendingAction

if TYPE_CHECKING:
    from ..store import PendingAction as StoredAction
    from .hub import Hub

log = logging.getLogger(__name__)

CHANNEL: Final = "sconnect_bus"
#: How often each instance rewrites its presence rows and reads the others', by default
#: (``limits.instance_heartbeat``).
HEARTBEAT_S: Final = 2.0
#: Heartbeats an instance may miss before its rows count as an instance that stopped or died.
STALE_BEATS: Final = 3
#: How long a row without its own ``stale_after`` (written by an older version) stays fresh.
PRESENCE_STALE_S: Final = STALE_BEATS * HEARTBEAT_S
#: How long a control waits for the instance running the session to say it has it, then
#: for the command to take effect there.
CONTROL_SEEN_S: Final = 3.0
CONTROL_DONE_S: Final = 30.0
#: How often copies of other instances' actions are checked for expiry.
SWEEP_S: Final = 1.0
_REASON_CHARS: Final = 1000
_LIVE: Final = (LifecycleState.PROCESSING, LifecycleState.TOOL_USE)


@attrs.define(eq=False)
class PgBus:
    """The bus of one instance (``instance``: its id in the store). Run with
    ``await nursery.start(PgBus.serve, hub, url, admission)``: it installs itself as
    ``hub.approval_bus`` and serves until cancelled."""

    url: str
    instance: str
    db: Database
    hub: Hub
    heartbeat_s: float = HEARTBEAT_S
    # Other instances' live (connections, sessions) per subject, from the last heartbeat.
    remote: dict[str, tuple[int, int]] = attrs.field(factory=dict)
    # The other instances alive at the last heartbeat (None before the first one).
    live: frozenset[str] | None = None
    _send: trio.MemorySendChannel[dict[str, Any]] = attrs.field(init=False)
    _outgoing: trio.MemoryReceiveChannel[dict[str, Any]] = attrs.field(init=False)
    _controls: dict[str, trio.MemorySendChannel[dict[str, Any]]] = attrs.field(factory=dict)
    _nursery: trio.Nursery | None = None
    # This program's version and host, published with the revision (read once).
    _identity: tuple[str, str] = attrs.field(init=False, factory=lambda: (program_version(), socket.gethostname()))

    def __attrs_post_init__(self) -> None:
        self._send, self._outgoing = trio.open_memory_channel[dict[str, Any]](256)

    @classmethod
    async def serve(cls, hub: Hub, url: str, admission: Any = None, *, heartbeat_s: float = HEARTBEAT_S,
                    task_status: trio.TaskStatus[PgBus] = trio.TASK_STATUS_IGNORED) -> None:
        instance = hub.store.instance
        if instance is None:
            raise ValueError("the PostgreSQL bus needs the store's instance id")
        db = await Database.open(url, max_size=2, application="sconnect-bus")
        bus = cls(url, instance, db, hub, heartbeat_s)
        try:
            async with trio.open_nursery() as nursery:
                bus._nursery = nursery
                hub.approvals.observers.append(bus._observe)
                nursery.start_soon(bus._sender)
                await nursery.start(bus._listener)
                nursery.start_soon(bus._heartbeat)
                nursery.start_soon(bus._sweeper)
                hub.approval_bus = bus
                if admission is not None:
                    admission.remote_connections = bus.remote_connections
                task_status.started(bus)
        finally:
            with trio.move_on_after(2, shield=True):
                try:
                    await db.run(_leave, instance)
                except PgError:
                    pass  # stale rows are ignored after their stale_after anyway
                await db.aclose()

    # --- the ApprovalBus interface -----------------------------------------------------

    async def answer(self, hub: BusHub, action_id: str, approved: bool, sub: str, roles: frozenset[str],
                     reason: str | None, reply_to: str, remember: Remember | None = None) -> PendingAction:
        pending = hub.approvals.pending.get(action_id)
        if pending is None:
            stored = await hub.store.get_action(action_id)
            if stored is None or action_id in hub.approvals.finished:
                return hub.approvals.answer(action_id, approved, sub, roles, reason, reply_to, remember)  # raises
            if stored.status != "pending" or stored.expires_at <= time.time():
                raise _decided_error(action_id, stored.status, reply_to)
            pending = hub.approvals.pending.get(action_id) or self._remember(
                stored, await self.db.run(_instance_of, action_id), None, False)
        if not pending.may_answer(sub, roles):
            who = "the requesting user" if pending.approver == "user" else "an admin other than the requester"
            raise ProtocolError(ErrorCode.FORBIDDEN, f"only {who} may answer action {action_id!r}", reply_to=reply_to)
        if self._gone(pending.origin):
            # Nobody would run it: say so, and close it for everyone (the store decides this too).
            why = "the instance running its turn stopped before it was answered"
            await hub.store.decide_action(action_id, "cancelled", None, why)
            hub.approvals.close(pending, "cancelled", why)
            raise ProtocolError(ErrorCode.ALREADY_DECIDED, f"action {action_id!r} was cancelled: {why}",
                                reply_to=reply_to)
        # What may be remembered is known where the turn runs: an action waiting on another
        # instance has no remember context here, so a remember asked for it is refused (the
        # approval is not taken) and can be given on the instance running the turn.
        grant_plan = plan(pending.remember, remember, approved, sub, roles, reply_to)
        status = "approved" if approved else "denied"
        # The database decides the race between answerers, on any instance.
        if not await hub.store.decide_action(action_id, status, sub, reason):
            stored = await hub.store.get_action(action_id)
            raise _decided_error(action_id, stored.status if stored else "expired", reply_to)
        pending.recorded = True
        pending.grant_plan = grant_plan
        if pending.status == "pending":
            pending.finish(status, sub, reason)  # type: ignore[arg-type]
            hub.approvals.retire(pending)
        if pending.origin is not None:
            self._publish({"op": "decided", "id": action_id, "status": status, "by": sub, "reason": reason})
        return pending

    async def settle(self, hub: BusHub, pending: PendingAction) -> None:
        store = hub.store
        if pending.status == "pending":  # the wait timed out here: perhaps answered elsewhere meanwhile
            await store.expire_actions()
            stored = await store.get_action(pending.action_id)
            if stored is not None and stored.status in ("approved", "denied"):
                pending.recorded = True
                pending.finish(stored.status, stored.decided_by, stored.reason)  # type: ignore[arg-type]
                hub.approvals.retire(pending)
            else:
                hub.approvals.close(pending, "expired", "no answer in time")
        elif not pending.recorded and not await store.decide_action(
                pending.action_id, pending.status, pending.decided_by, pending.reason):
            stored = await store.get_action(pending.action_id)
            if stored is not None and stored.status in ("approved", "denied"):
                pending.status = stored.status  # type: ignore[assignment]
                pending.decided_by, pending.reason = stored.decided_by, stored.reason
            else:
                pending.status = "expired"

    async def forward_control(self, conn: ControlPeer, frame: AgentControl) -> bool:
        stored = await self.hub.store.get_session(frame.session_id)
        if stored is None or stored.subject != conn.principal.sub or stored.state == str(LifecycleState.TERMINATED):
            # The caller answers not_found / forbidden as for a local session; a terminated
            # session runs nowhere, so no instance is asked (nor waited for).
            return False
        rid = new_id()
        send, receive = trio.open_memory_channel[dict[str, Any]](2)
        self._controls[rid] = send
        reply: dict[str, Any] | None = None
        try:
            self._publish({"op": "control", "rid": rid, "session_id": frame.session_id,
                           "subject": conn.principal.sub, "command": str(frame.command)})
            with trio.move_on_after(CONTROL_SEEN_S):
                reply = await receive.receive()
            if reply is not None and reply.get("op") == "control_seen":
                reply = None
                with trio.move_on_after(CONTROL_DONE_S):
                    reply = await receive.receive()
        finally:
            self._controls.pop(rid, None)
        if reply is None:
            return False
        if "code" in reply:
            raise ProtocolError(ErrorCode(reply["code"]), str(reply.get("message", "")), reply_to=frame.id)
        conn.send(AgentState(session_id=frame.session_id, agent=stored.agent,
                             state=LifecycleState(reply["state"]), reply_to=frame.id))
        return True

    def _gone(self, origin: str | None) -> bool:
        # "unknown": an action recorded without an instance id (nothing to check it against).
        return origin not in (None, "unknown") and self.live is not None and origin not in self.live

    def remote_sessions(self, sub: str) -> int:
        return self.remote.get(sub, (0, 0))[1]

    def remote_connections(self, sub: str) -> int:
        return self.remote.get(sub, (0, 0))[0]

    # --- sending ---------------------------------------------------------------------

    def _observe(self, event: str, pending: PendingAction) -> None:
        if pending.origin is not None:
            return  # another instance's: its owner speaks for it
        if event == "added":
            self._publish({"op": "asked", "id": pending.action_id, "reason": pending.frame.reason[:_REASON_CHARS],
                           "self_approval": pending.self_approval})
        elif event == "retired":
            self._publish({"op": "finished", "id": pending.action_id, "status": pending.status})

    def _publish(self, message: dict[str, Any]) -> None:
        try:
            self._send.send_nowait({**message, "from": self.instance})
        except trio.WouldBlock:
            log.warning("bus: %s for %s not sent (the queue is full); the database still decides",
                        message.get("op"), message.get("id") or message.get("rid"))

    async def _sender(self) -> None:
        async for message in self._outgoing:
            try:
                await notify(self.db, CHANNEL, json.dumps(message, separators=(",", ":")))
            except Exception as exc:  # noqa: BLE001 - a driver error too: the bus never ends the server
                log.warning("bus: could not send %s: %s", message.get("op"), exc)

    # --- receiving -------------------------------------------------------------------

    async def _listener(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """LISTEN for as long as the server runs; re-open with a backoff when lost."""
        delay, started = 1.0, False
        while True:
            try:
                async with listen(self.url, [CHANNEL]) as incoming:
                    await self._catch_up()
                    if not started:
                        started = True
                        task_status.started()
                    delay = 1.0
                    async for note in incoming:
                        await self._on(note.payload)
            except* Exception as group:  # the database went away (PgError), or a driver error
                log.warning("bus: listening lost (%s); again in %gs", group.exceptions[0], delay)
            if not started:
                started = True
                task_status.started()  # serve anyway: the database decides, the bus only hurries
            await trio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def _catch_up(self) -> None:
        """Every action pending now (notifications sent while nobody listened are lost)."""
        owners = dict(await self.db.run(_pending_owners))
        for stored in await self.hub.store.pending_actions():
            if stored.action_id not in self.hub.approvals.pending and stored.expires_at > time.time():
                self._remember(stored, owners.get(stored.action_id), None, False)

    async def _on(self, payload: str) -> None:
        try:
            message = json.loads(payload)
            if not isinstance(message, dict) or message.get("from") == self.instance:
                return
            op = message.get("op")
            if op == "asked":
                await self._asked(message)
            elif op in ("decided", "finished"):
                self._over(message)
            elif op == "control":
                session = self.hub.sessions.get(str(message.get("session_id")))
                if session is not None and session.conn.principal.sub == message.get("subject"):
                    assert self._nursery is not None
                    self._nursery.start_soon(self._control, message, session)
            elif op in ("control_seen", "control_done"):
                waiter = self._controls.get(str(message.get("rid")))
                if waiter is not None:
                    waiter.send_nowait(message)
        except Exception:  # noqa: BLE001 - one bad notification never ends the listener
            log.exception("bus: a notification could not be handled")

    async def _asked(self, message: dict[str, Any]) -> None:
        action_id = str(message.get("id"))
        if action_id in self.hub.approvals.pending:
            return
        stored = await self.hub.store.get_action(action_id)
        if stored is None or stored.status != "pending" or action_id in self.hub.approvals.pending:
            return
        pending = self._remember(stored, str(message.get("from")), str(message.get("reason") or ""),
                                 message.get("self_approval") is True)
        for conn in list(self.hub.connections):
            if pending.may_answer(conn.principal.sub, conn.principal.roles):
                conn.send(pending.frame)

    def _over(self, message: dict[str, Any]) -> None:
        pending = self.hub.approvals.pending.get(str(message.get("id")))
        if pending is None:
            return
        status = message.get("status")
        if status not in ("approved", "denied", "expired", "cancelled"):
            return
        if message.get("op") == "decided":
            pending.recorded = True  # the decider wrote it to the store first
        pending.finish(status, message.get("by"), message.get("reason"))
        self.hub.approvals.retire(pending)

    async def _control(self, message: dict[str, Any], session: Any) -> None:
        rid, command = str(message.get("rid")), str(message.get("command"))
        self._publish({"op": "control_seen", "rid": rid})
        try:
            await session.control(command, rid)
            if command == "stop":
                with trio.move_on_after(CONTROL_DONE_S - 1):
                    await session.wait_ended()
            elif command == "cancel":
                # The cancelled turn ends on its own task: wait (bounded) until it has.
                for _ in range(int((CONTROL_DONE_S - 1) / 0.02)):
                    if session.state not in _LIVE:
                        break
                    await trio.sleep(0.02)
            self._publish({"op": "control_done", "rid": rid, "state": str(session.state)})
        except ProtocolError as exc:
            self._publish({"op": "control_done", "rid": rid, "code": str(exc.code), "message": str(exc.message)})

    def _remember(self, stored: StoredAction, origin: str | None, reason: str | None,
                  self_approval: bool) -> PendingAction:
        """Keep another instance's pending action here, for listing and answering."""
        frame = AgentAction(
            action_id=stored.action_id, kind=ActionKind(stored.kind), name=stored.name,
            arguments=dict(stored.arguments), level=stored.level, requires_approval=True,
            approver=Approver(stored.approver), executor=Executor.SERVER,
            reason=reason or f"waits for {stored.approver} approval on another instance",
            session_id=stored.session_id,
        )
        pending = PendingAction(
            frame=frame, requester=stored.subject, approver=stored.approver,  # type: ignore[arg-type]
            self_approval=self_approval, origin=origin or "unknown",
            expires_at=trio.current_time() + max(0.0, stored.expires_at - time.time()),
        )
        self.hub.approvals.add(pending)
        return pending

    # --- background ------------------------------------------------------------------

    async def _sweeper(self) -> None:
        """Drop copies of other instances' actions past their expiry (their owner may be gone)."""
        while True:
            await trio.sleep(SWEEP_S)
            now = trio.current_time()
            for pending in list(self.hub.approvals.pending.values()):
                if pending.origin is not None and pending.expires_at <= now:
                    self.hub.approvals.close(pending, "expired", "no answer in time")

    async def _heartbeat(self) -> None:
        failing = False
        while True:
            connections = Counter(c.principal.sub for c in self.hub.connections)
            sessions = Counter(s.conn.principal.sub for s in self.hub.sessions.values())
            rows = [(sub, connections[sub], sessions[sub]) for sub in set(connections) | set(sessions)]
            serving = Serving(self.instance, self.hub.policy_revision, self.hub.config_loaded_at, *self._identity,
                              seen_at=time.time(), stale_after=STALE_BEATS * self.heartbeat_s)
            try:
                self.remote, self.live = await self.db.run(_beat, serving, rows)
                failing = False
            except Exception as exc:  # noqa: BLE001 - stale counts are ignored by the others (stale_after)
                if not failing:
                    log.warning("bus: presence not renewed (the limits count this instance only until it is): %s",
                                exc)
                self.remote = {}
                failing = True
            await trio.sleep(self.heartbeat_s)


def _decided_error(action_id: str, status: str, reply_to: str) -> ProtocolError:
    if status in ("expired", "pending"):
        return ProtocolError(ErrorCode.EXPIRED, f"action {action_id!r} expired before it was answered",
                             reply_to=reply_to)
    return ProtocolError(ErrorCode.ALREADY_DECIDED, f"action {action_id!r} was already {status}", reply_to=reply_to)


@attrs.frozen
class Serving:
    """What one instance serves, as its presence row says (``sconnect check`` lists these)."""

    instance: str
    revision: str | None  # None: an instance that did not publish it
    loaded_at: float | None
    version: str | None
    host: str | None
    seen_at: float
    # Seconds after seen_at the row stays fresh (the writer's STALE_BEATS heartbeats).
    stale_after: float = PRESENCE_STALE_S


def program_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("scalytics-connect")
    except PackageNotFoundError:
        return "(not installed)"


def live_instances(conn: Any, now: float) -> list[Serving]:
    """The instances whose heartbeat is fresh at ``now``, by instance id (blocking; a
    psycopg connection in autocommit mode)."""
    import psycopg

    try:
        rows = conn.execute(f"SELECT instance, revision, loaded_at, version, host, seen_at, {_STALE_AFTER} "
                            f"FROM presence WHERE subject = '' AND {_FRESH} ORDER BY instance",
                            {"now": now, "default": PRESENCE_STALE_S}).fetchall()
    except psycopg.errors.UndefinedColumn:
        # A schema from before rows said how long they stay fresh (older instances only).
        rows = conn.execute("SELECT instance, revision, loaded_at, version, host, seen_at, %s FROM presence "
                            "WHERE subject = '' AND seen_at > %s ORDER BY instance",
                            (PRESENCE_STALE_S, now - PRESENCE_STALE_S)).fetchall()
    return [Serving(str(i), r, None if at is None else float(at), v, h, float(seen), float(stale))
            for i, r, at, v, h, seen, stale in rows]


# A presence row's freshness at %(now)s, by its writer's own stale_after.
_STALE_AFTER: Final = "COALESCE(stale_after, %(default)s)"
_FRESH: Final = f"seen_at + {_STALE_AFTER} > %(now)s"


def _beat(conn: Any, serving: Serving,
          rows: list[tuple[str, int, int]]) -> tuple[dict[str, tuple[int, int]], frozenset[str]]:
    """Rewrite this instance's presence rows (subject '' says it is alive, and what it
    serves); the others' fresh ones, summed per subject, and which other instances are alive."""
    instance, now, stale = serving.instance, serving.seen_at, serving.stale_after
    with conn.transaction():
        conn.execute("DELETE FROM presence WHERE instance = %s", (instance,))
        conn.execute("INSERT INTO presence (instance, subject, connections, sessions, seen_at, stale_after, revision, "
                     "loaded_at, version, host) VALUES (%s, '', 0, 0, %s, %s, %s, %s, %s, %s)",
                     (instance, now, stale, serving.revision, serving.loaded_at, serving.version, serving.host))
        if rows:
            with conn.cursor() as cursor:
                cursor.executemany("INSERT INTO presence (instance, subject, connections, sessions, seen_at, "
                                   "stale_after) VALUES (%s, %s, %s, %s, %s, %s)",
                                   [(instance, *row, now, stale) for row in rows])
    found = conn.execute(f"SELECT instance, subject, connections, sessions FROM presence "
                         f"WHERE instance != %(instance)s AND {_FRESH}",
                         {"instance": instance, "now": now, "default": PRESENCE_STALE_S}).fetchall()
    counts: dict[str, tuple[int, int]] = {}
    for _other, sub, c, s in found:
        if sub:
            before = counts.get(sub, (0, 0))
            counts[sub] = (before[0] + int(c), before[1] + int(s))
    return counts, frozenset(str(row[0]) for row in found)


def _instance_of(conn: Any, action_id: str) -> str | None:
    row = conn.execute("SELECT instance FROM pending_actions WHERE action_id = %s", (action_id,)).fetchone()
    return None if row is None or row[0] is None else str(row[0])


def _pending_owners(conn: Any) -> list[tuple[str, str]]:
    return [(str(a), str(i)) for a, i in conn.execute(
        "SELECT action_id, instance FROM pending_actions WHERE status = 'pending' AND instance IS NOT NULL")]


def _leave(conn: Any, instance: str) -> None:
    conn.execute("DELETE FROM presence WHERE instance = %s", (instance,))
