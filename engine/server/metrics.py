"""Prometheus metrics without a dependency: counters, gauges, histograms and their text format.

Why not ``prometheus_client``: the service exposes a dozen metrics from one
process and one thread, and the text exposition format 0.0.4 is a few lines
per family.  ``prometheus_client`` brings a process-global default registry
(tests and several servers in one process then collide on names), locks on
every increment for threads we do not have, a WSGI/thread-based HTTP server
we would not use (``/metrics`` is served by :mod:`engine.server.health`, on
trio), and multiprocess machinery we do not need.  Owning ~300 lines keeps the
format under test here and the registry per server instance.

Model (the same as Prometheus client libraries'):

- A :class:`Registry` holds metric *families* in registration order and renders
  them with :meth:`Registry.render`.
- A family has a name, a help text and fixed label names; each distinct tuple of
  label values is one *series*.  ``family.labels(tool="grep")`` returns the series
  (keep it for hot paths); ``family.inc(tool="grep")`` is the shorthand.
- :class:`Counter` only goes up (names end in ``_total``); :class:`Gauge` is set,
  raised and lowered, or read from a callback at scrape time; :class:`Histogram`
  counts observations in fixed cumulative buckets plus ``_sum`` and ``_count``.

Label cardinality: label values must come from bounded sets (tool names from
the config, status and error-code enums) -- never subjects, session or action
ids, URIs.  As a guard against a mistake, each family holds at most
``max_series`` series; observations for further label values are folded into
one series whose labels are all ``"_overflow"`` (so totals stay right) and a
warning is logged once per family.

Concurrency: not thread-safe, by design -- call from the trio thread (from a
worker thread, go through ``trio.from_thread.run_sync``).  Nothing here awaits,
so an update can never be interleaved with a scrape.

Errors: wrong label names, a negative counter increment, invalid names or
unsorted buckets raise ``ValueError`` at once (they are programming errors).
A gauge callback that raises at scrape time is logged and its family is
rendered without samples, so one broken callback never breaks the scrape.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Seconds, for everything from a policy decision (~1 ms) to a long tool run (60 s,
# the longest sandbox timeout the shipped config uses).
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)
OVERFLOW = "_overflow"
DEFAULT_MAX_SERIES = 500

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")


# --- the text format --------------------------------------------------------------------


def format_value(value: float) -> str:
    """A sample value (or ``le`` bound) as Prometheus clients write it: ``1.0``, ``+Inf``, ``NaN``.

    ``repr(float)`` is the shortest round-tripping form, which Go's ``ParseFloat``
    reads back exactly; ``prometheus_client`` writes the same spelling, so ``le``
    label values match what other exporters produce.
    """
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def escape_label_value(value: str) -> str:
    """Backslash, double quote and line feed escaped, as format 0.0.4 requires."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    """Backslash and line feed escaped (quotes stay as they are in HELP lines)."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _label_text(names: Sequence[str], values: Sequence[str]) -> str:
    if not names:
        return ""
    pairs = ",".join(f'{n}="{escape_label_value(v)}"' for n, v in zip(names, values, strict=True))
    return "{" + pairs + "}"


# --- families ---------------------------------------------------------------------------

S = TypeVar("S")


class _Family(Generic[S]):
    """A named metric with fixed label names and one series per tuple of label values."""

    type_name = ""

    def __init__(
        self, name: str, help: str, labelnames: Sequence[str] = (), *, max_series: int = DEFAULT_MAX_SERIES
    ) -> None:
        if not _METRIC_NAME.match(name):
            raise ValueError(f"invalid metric name {name!r}")
        for label in labelnames:
            if not _LABEL_NAME.match(label) or label.startswith("__"):
                raise ValueError(f"invalid label name {label!r} for {name}")
        if len(set(labelnames)) != len(labelnames):
            raise ValueError(f"duplicate label names for {name}: {labelnames!r}")
        if max_series < 1:
            raise ValueError("max_series must be at least 1")
        self.name = name
        self.help = help
        self.labelnames: tuple[str, ...] = tuple(labelnames)
        self.max_series = max_series
        self._series: dict[tuple[str, ...], S] = {}
        self._warned = False
        if not self.labelnames:
            # An unlabelled metric exists from the start, so a scrape shows 0, not nothing.
            self._series[()] = self._new_series()

    def _new_series(self) -> S:
        raise NotImplementedError

    def _key(self, labels: Mapping[str, object]) -> tuple[str, ...]:
        # Counted on every frame and call: no set built per use (same names, same count = same set).
        try:
            if len(labels) == len(self.labelnames):
                return tuple([str(labels[n]) for n in self.labelnames])
        except KeyError:
            pass
        raise ValueError(f"{self.name} takes labels {sorted(self.labelnames)}, got {sorted(labels)}")

    def labels(self, **labels: object) -> S:
        """The series for these label values (created on first use); every label must be given."""
        key = self._key(labels)
        series = self._series.get(key)
        if series is None:
            if len(self._series) >= self.max_series:
                key = (OVERFLOW,) * len(self.labelnames)
                if not self._warned:
                    self._warned = True
                    log.warning(
                        "metric has too many label combinations; folding new ones into %r",
                        OVERFLOW, extra={"metric": self.name, "max_series": self.max_series},
                    )
                series = self._series.get(key)
            if series is None:
                series = self._series[key] = self._new_series()
        return series

    def _items(self) -> list[tuple[tuple[str, ...], S]]:
        # Sorted, so that a scrape is deterministic whatever the order of first use.
        return sorted(self._series.items())

    def _samples(self) -> Iterator[str]:
        raise NotImplementedError

    def render(self) -> str:
        head = f"# HELP {self.name} {escape_help(self.help)}\n# TYPE {self.name} {self.type_name}\n"
        return head + "".join(line + "\n" for line in self._samples())


class CounterSeries:
    """One counter series: a float that only goes up."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        self.value += amount


class Counter(_Family[CounterSeries]):
    """A monotonic count (``..._total``): events, requests, failures."""

    type_name = "counter"

    def __init__(
        self, name: str, help: str, labelnames: Sequence[str] = (), *, max_series: int = DEFAULT_MAX_SERIES
    ) -> None:
        if not name.endswith("_total"):
            raise ValueError(f"counter names end in _total: {name!r}")
        super().__init__(name, help, labelnames, max_series=max_series)

    def _new_series(self) -> CounterSeries:
        return CounterSeries()

    def inc(self, amount: float = 1.0, /, **labels: object) -> None:
        if not labels and not self.labelnames:
            self._series[()].inc(amount)  # an unlabelled counter's one series (frames in and out)
            return
        self.labels(**labels).inc(amount)

    def value(self, **labels: object) -> float:
        """The current value (0 for label values never used); for tests and introspection."""
        series = self._series.get(self._key(labels))
        return series.value if series is not None else 0.0

    def _samples(self) -> Iterator[str]:
        for key, series in self._items():
            yield f"{self.name}{_label_text(self.labelnames, key)} {format_value(series.value)}"


class GaugeSeries:
    """One gauge series: a float that goes up and down."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def set(self, value: float) -> None:
        self.value = float(value)

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount


# An unlabelled gauge's callback returns a number; a labelled one's returns
# {label-values tuple: number}.
GaugeCallback = Callable[[], "float | Mapping[tuple[str, ...], float]"]


class Gauge(_Family[GaugeSeries]):
    """A value that goes up and down; or, with :meth:`set_callback`, one read at scrape time.

    A callback is the better choice when the truth lives elsewhere (``len(hub.connections)``):
    nothing can drift when an increment and its decrement end up on different paths.
    """

    type_name = "gauge"

    def __init__(
        self, name: str, help: str, labelnames: Sequence[str] = (), *, max_series: int = DEFAULT_MAX_SERIES
    ) -> None:
        super().__init__(name, help, labelnames, max_series=max_series)
        self._callback: GaugeCallback | None = None

    def _new_series(self) -> GaugeSeries:
        return GaugeSeries()

    def set(self, value: float, /, **labels: object) -> None:
        self.labels(**labels).set(value)

    def inc(self, amount: float = 1.0, /, **labels: object) -> None:
        self.labels(**labels).inc(amount)

    def dec(self, amount: float = 1.0, /, **labels: object) -> None:
        self.labels(**labels).dec(amount)

    def set_callback(self, callback: GaugeCallback | None) -> None:
        """Read the gauge from ``callback`` at every scrape (None: back to stored values).

        Unlabelled: the callback returns a number.  Labelled: a mapping from the tuple of
        label values (in ``labelnames`` order) to a number.  It runs in the scraping task,
        so it must be quick and must not block.
        """
        self._callback = callback

    def value(self, **labels: object) -> float:
        """The current value (the callback's, if set); for tests and introspection."""
        return dict(self._current()).get(self._key(labels), 0.0)

    def _current(self) -> list[tuple[tuple[str, ...], float]]:
        if self._callback is None:
            return [(key, series.value) for key, series in self._items()]
        got = self._callback()
        if not self.labelnames:
            return [((), float(got))]  # type: ignore[arg-type]
        if not isinstance(got, Mapping):
            raise TypeError(f"the callback of labelled gauge {self.name} must return a mapping")
        rows = []
        for key, value in got.items():
            key = tuple(str(v) for v in key)
            if len(key) != len(self.labelnames):
                raise ValueError(f"{self.name}: callback key {key!r} does not match labels {self.labelnames!r}")
            rows.append((key, float(value)))
        return sorted(rows)[: self.max_series]

    def _samples(self) -> Iterator[str]:
        try:
            rows = self._current()
        except Exception:
            log.exception("gauge callback failed", extra={"metric": self.name})
            return
        for key, value in rows:
            yield f"{self.name}{_label_text(self.labelnames, key)} {format_value(value)}"


class HistogramSeries:
    """One histogram series: per-bucket counts (not yet cumulative), sum and count."""

    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        # One slot per finite bound plus the +Inf bucket.
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        # Buckets are "less than or equal": a value exactly on a bound belongs to it.
        index = len(self.bounds)
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                index = i
                break
        self.counts[index] += 1
        self.sum += value
        self.count += 1

    @contextmanager
    def time(self) -> Iterator[None]:
        """Observe the seconds the block took -- also when it raises or is cancelled."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.observe(time.perf_counter() - started)


class Histogram(_Family[HistogramSeries]):
    """Observations (latencies in seconds) counted in fixed buckets, with their sum and count."""

    type_name = "histogram"

    def __init__(
        self, name: str, help: str, labelnames: Sequence[str] = (), *,
        buckets: Iterable[float] = LATENCY_BUCKETS_S, max_series: int = DEFAULT_MAX_SERIES,
    ) -> None:
        bounds = tuple(float(b) for b in buckets)
        if bounds and math.isinf(bounds[-1]) and bounds[-1] > 0:
            bounds = bounds[:-1]  # +Inf is always there; accept it spelled out too
        if not bounds:
            raise ValueError(f"{name}: a histogram needs at least one finite bucket")
        if any(math.isnan(b) or math.isinf(b) for b in bounds) or list(bounds) != sorted(set(bounds)):
            raise ValueError(f"{name}: buckets must be finite, distinct and ascending: {bounds!r}")
        if "le" in labelnames:
            raise ValueError(f"{name}: 'le' is reserved for histogram buckets")
        self.bounds = bounds
        super().__init__(name, help, labelnames, max_series=max_series)

    def _new_series(self) -> HistogramSeries:
        return HistogramSeries(self.bounds)

    def observe(self, value: float, /, **labels: object) -> None:
        self.labels(**labels).observe(value)

    def time(self, **labels: object) -> AbstractContextManager[None]:
        """``with histogram.time(tool="grep"): ...`` observes the block's duration in seconds."""
        return self.labels(**labels).time()

    def _samples(self) -> Iterator[str]:
        names = (*self.labelnames, "le")
        for key, series in self._items():
            cumulative = 0
            for bound, count in zip((*self.bounds, math.inf), series.counts, strict=True):
                cumulative += count
                yield f"{self.name}_bucket{_label_text(names, (*key, format_value(bound)))} {cumulative}"
            labels = _label_text(self.labelnames, key)
            yield f"{self.name}_sum{labels} {format_value(series.sum)}"
            yield f"{self.name}_count{labels} {series.count}"


# --- the registry -----------------------------------------------------------------------

F = TypeVar("F", bound=_Family)  # type: ignore[type-arg]


def _claimed_names(family: _Family) -> set[str]:  # type: ignore[type-arg]
    """The names a family's samples use, plus its OpenMetrics family name.

    A counter ``x_total`` is family ``x`` in OpenMetrics, so it may not sit next to a
    gauge ``x``; a histogram ``x`` owns ``x_bucket``, ``x_sum`` and ``x_count``.
    """
    names = {family.name}
    if isinstance(family, Counter):
        names.add(family.name.removesuffix("_total"))
    if isinstance(family, Histogram):
        names |= {f"{family.name}_bucket", f"{family.name}_sum", f"{family.name}_count"}
    return names


class Registry:
    """The metric families of one server, rendered together for a scrape."""

    def __init__(self) -> None:
        self._families: dict[str, _Family] = {}  # type: ignore[type-arg]

    def register(self, family: F) -> F:
        """Add a family; a name already taken is an error (see ``_claimed_names``)."""
        taken: set[str] = set()
        for other in self._families.values():
            taken |= _claimed_names(other)
        if _claimed_names(family) & taken:
            raise ValueError(f"metric {family.name!r} clashes with one already registered")
        self._families[family.name] = family
        return family

    def counter(self, name: str, help: str, labelnames: Sequence[str] = (), **kw: int) -> Counter:
        return self.register(Counter(name, help, labelnames, **kw))

    def gauge(self, name: str, help: str, labelnames: Sequence[str] = (), **kw: int) -> Gauge:
        return self.register(Gauge(name, help, labelnames, **kw))

    def histogram(
        self, name: str, help: str, labelnames: Sequence[str] = (), *,
        buckets: Iterable[float] = LATENCY_BUCKETS_S, max_series: int = DEFAULT_MAX_SERIES,
    ) -> Histogram:
        return self.register(Histogram(name, help, labelnames, buckets=buckets, max_series=max_series))

    def get(self, name: str) -> _Family | None:  # type: ignore[type-arg]
        return self._families.get(name)

    def render(self) -> str:
        """Every family in the text exposition format 0.0.4 (``CONTENT_TYPE``)."""
        return "".join(family.render() for family in self._families.values())


# --- the service's metrics --------------------------------------------------------------

# The label value for a tool that is not in the configuration (offered by a client,
# or unknown): those names come from clients and must not become label values.
CLIENT_TOOL = "_client"
UNKNOWN_TOOL = "_unknown"


class ServerMetrics:
    """The metrics of one Scalytics Connect server, with stable names (operators alert on them).

    Each attribute is a family; the ``record_*`` helpers exist where a label needs
    care (a tool name that may come from a client).  The gauges of live things
    (connections, sessions, pending approvals) are best bound to the hub with
    :meth:`track`, so they are read at scrape time and cannot drift.
    """

    def __init__(self, registry: Registry | None = None) -> None:
        r = self.registry = registry if registry is not None else Registry()
        self.connections = r.gauge("sconnect_connections", "WebSocket connections open now (authenticated).")
        # Not "sconnect_connections_total": OpenMetrics (and prometheus_client's parser) names a
        # counter's family without "_total", which would clash with the gauge above.
        self.connections_accepted_total = r.counter(
            "sconnect_connections_accepted_total", "WebSocket connections accepted after authentication."
        )
        self.auth_failures_total = r.counter(
            "sconnect_auth_failures_total", "Handshakes refused for authentication, by reason.", ("reason",)
        )
        self.sessions = r.gauge("sconnect_sessions", "Agent sessions live on some connection now.")
        self.turns_total = r.counter("sconnect_turns_total", "Agent turns finished (answered, failed or cancelled).")
        self.turn_seconds = r.histogram("sconnect_turn_seconds", "Duration of one agent turn, in seconds.")
        self.tool_calls_total = r.counter(
            "sconnect_tool_calls_total",
            "Tool calls by tool and result status (ok, error, denied, timeout, cancelled, limit_exceeded).",
            ("tool", "status"),
        )
        self.tool_call_seconds = r.histogram(
            "sconnect_tool_call_seconds", "Duration of a tool's execution (after approval), in seconds.", ("tool",)
        )
        self.model_steps_total = r.counter(
            "sconnect_model_steps_total",
            "Model steps by model (a models.d/ name, or AGENT/inline) and outcome: served, fell_back (failed"
            " before answering, the next model took over) or failed.",
            ("model", "outcome"),
        )
        self.model_choices_total = r.counter(
            "sconnect_model_choices_total",
            "Turns routed by feedback (routing: feedback), by agent, the model chosen first, and how: sampled"
            " (Thompson sampling over its ratings) or explored (at random, the exploration share).",
            ("agent", "model", "how"),
        )
        self.feedback_total = r.counter(
            "sconnect_feedback_total",
            "Ratings users gave answered turns, by agent, the model that answered (_none: none did) and rating"
            " (good, bad).",
            ("agent", "model", "rating"),
        )
        self.resource_reads_total = r.counter(
            "sconnect_resource_reads_total", "Resource reads by URI scheme and outcome.", ("scheme", "outcome")
        )
        self.egress_connections_total = r.counter(
            "sconnect_egress_connections_total",
            "Connections tools opened through the egress proxy, by tool and outcome (allowed, refused, failed).",
            ("tool", "outcome"),
        )
        self.egress_bytes_total = r.counter(
            "sconnect_egress_bytes_total",
            "Bytes the egress proxy relayed, by tool and direction (up: tool to destination; down: back).",
            ("tool", "direction"),
        )
        self.pending_approvals = r.gauge("sconnect_pending_approvals", "Actions waiting for a person's approval now.")
        self.config_reloads_total = r.counter(
            "sconnect_config_reloads_total", "Configuration reloads that were valid and took effect."
        )
        self.config_reload_errors_total = r.counter(
            "sconnect_config_reload_errors_total", "Configuration reloads refused as invalid (the old config stays)."
        )
        self.config_last_reload_ok = r.gauge(
            "sconnect_config_last_reload_ok",
            "1 when the last configuration reload took effect (or none was tried), 0 while a refused one"
            " leaves the previous configuration serving.",
        )
        self.config_last_reload_ok.set(1)
        # An info metric (value 1): instances whose revision label differ serve different
        # policies, e.g. `count(count by (revision) (sconnect_config_info)) > 1` for a mixed fleet.
        self.config_info = r.gauge(
            "sconnect_config_info",
            "1, labelled with the policy revision this server serves now (sha256 over the policy files).",
            ("revision",),
        )
        self.frames_total = r.counter(
            "sconnect_frames_total", "WebSocket frames, by direction (in: from clients, out: to clients).",
            ("direction",),
        )
        self.errors_total = r.counter("sconnect_errors_total", "Error frames sent to clients, by code.", ("code",))
        self.start_time_seconds = r.gauge(
            "sconnect_start_time_seconds", "When this server started, in seconds since the Unix epoch."
        )
        self.start_time_seconds.set(time.time())
        # Both directions exist from the first scrape, so rate() works before the first frame.
        self.frames_in = self.frames_total.labels(direction="in")
        self.frames_out = self.frames_total.labels(direction="out")

    def track(
        self, *, connections: Callable[[], float], sessions: Callable[[], float],
        pending_approvals: Callable[[], float], revision: Callable[[], str] | None = None,
    ) -> None:
        """Read the live-object gauges from callbacks at scrape time (e.g. ``lambda: len(hub.sessions)``),
        and the policy revision in force (``lambda: hub.policy_revision``) for ``sconnect_config_info``."""
        self.connections.set_callback(connections)
        self.sessions.set_callback(sessions)
        self.pending_approvals.set_callback(pending_approvals)
        if revision is not None:
            self.config_info.set_callback(lambda: {(revision(),): 1})

    @staticmethod
    def tool_label(name: str, *, configured: bool, offered: bool = False) -> str:
        """The ``tool`` label: a configured tool's name; a fixed stand-in for any other name."""
        if configured:
            return name
        return CLIENT_TOOL if offered else UNKNOWN_TOOL

    def record_tool_call(
        self, name: str, status: str, seconds: float | None = None, *, configured: bool, offered: bool = False
    ) -> None:
        """Count one finished tool call; ``seconds`` (when it ran) goes to the latency histogram."""
        tool = self.tool_label(name, configured=configured, offered=offered)
        self.tool_calls_total.inc(tool=tool, status=status)
        if seconds is not None:
            self.tool_call_seconds.observe(seconds, tool=tool)

    def record_egress(self, tool: str, outcome: str, bytes_up: int, bytes_down: int) -> None:
        """Count one connection through a configured tool's egress proxy, and its bytes."""
        self.egress_connections_total.inc(tool=tool, outcome=outcome)
        if bytes_up:
            self.egress_bytes_total.inc(bytes_up, tool=tool, direction="up")
        if bytes_down:
            self.egress_bytes_total.inc(bytes_down, tool=tool, direction="down")

    def model_step(self, model: str, outcome: str) -> None:
        """Count one model step (the label comes from the configuration: bounded)."""
        self.model_steps_total.inc(model=model, outcome=outcome)

    def record_resource_read(self, scheme: str | None, outcome: str) -> None:
        """Count one read; pass the scheme only once the URI resolved to a configured host."""
        self.resource_reads_total.inc(scheme=scheme or "_invalid", outcome=outcome)

    def record_config_reload(self, ok: bool) -> None:
        """Count one reload attempt: taken (``ok``) or refused as invalid."""
        (self.config_reloads_total if ok else self.config_reload_errors_total).inc()
        self.config_last_reload_ok.set(1 if ok else 0)

    def render(self) -> str:
        return self.registry.render()
