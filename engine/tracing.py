"""OpenTelemetry traces: a span per turn, per action (its decision, approval wait and
sandbox run), per MCP request and per store call.

Only the OpenTelemetry *API* is a dependency. Nothing is traced unless an SDK is
configured — by :func:`configure_from_env` (``OTEL_TRACES_EXPORTER=otlp`` or ``console``,
with the ``otel`` extra installed), or by whoever embeds the engine and sets a tracer
provider. Until then :func:`span` returns one shared null context and never imports
OpenTelemetry: no cost beyond a dictionary look-up.

What spans carry: the subject, agent, session, turn, tool, decision and call (action) id,
the database system and operation — never arguments, results, message text or tokens.

Trace context: an incoming W3C ``traceparent`` (the WebSocket handshake's HTTP headers,
an MCP request's headers) makes the spans under it children of the caller's span
(:func:`continued`). Trio copies context variables into every task it starts and into
``to_thread`` workers, so a turn started from a connection, or a store call in a worker
thread, stays under the right parent.

Errors: a span whose block raises records the exception and ends with an error status
(OpenTelemetry's default); tracing never changes what the block raises.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any, Final

log = logging.getLogger(__name__)

TRACER_NAME: Final = "scalytics-connect"
_NULL: Final = contextlib.nullcontext()
_PROPAGATED: Final = frozenset({b"traceparent", b"tracestate"})


def enabled() -> bool:
    """Whether a tracer provider other than OpenTelemetry's no-op default is in place."""
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return False  # nobody imported OpenTelemetry: nobody configured an SDK either
    provider = trace.get_tracer_provider()
    return not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)


def span(name: str, **attributes: Any) -> contextlib.AbstractContextManager[Any]:
    """A span named ``name`` around a block, child of the current one, with the given
    attributes (None values left out; keys become ``sconnect.<key>`` unless they hold a
    dot). The null context when tracing is off."""
    if not enabled():
        return _NULL
    from opentelemetry import trace

    return trace.get_tracer(TRACER_NAME).start_as_current_span(name, attributes=_attributes(attributes))


def note(**attributes: Any) -> None:
    """Add attributes to the current span (a decision known only half-way through)."""
    if not enabled():
        return
    from opentelemetry import trace

    current = trace.get_current_span()
    if current.is_recording():
        current.set_attributes(_attributes(attributes))


@contextlib.contextmanager
def continued(headers: Iterable[tuple[bytes, bytes]]) -> Iterator[None]:
    """Within the block, the trace named by the ``traceparent`` (and ``tracestate``)
    among ``headers`` (lower- or mixed-case names, as an ASGI scope or wsproto gives
    them) is the current one; a missing or malformed header changes nothing."""
    if not enabled():
        yield
        return
    carrier = {name.lower().decode("latin-1"): value.decode("latin-1")
               for name, value in headers if name.lower() in _PROPAGATED}
    if "traceparent" not in carrier:
        yield
        return
    from opentelemetry import context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    token = context.attach(TraceContextTextMapPropagator().extract(carrier))
    try:
        yield
    finally:
        context.detach(token)


def _attributes(values: dict[str, Any]) -> dict[str, Any]:
    return {(key if "." in key else f"sconnect.{key}"): (value if isinstance(value, bool | int | float) else str(value))
            for key, value in values.items() if value is not None}


def configure_from_env(environ: dict[str, str] | None = None) -> bool:
    """Install an SDK tracer provider when ``OTEL_TRACES_EXPORTER`` asks for one
    (``otlp``: OTLP over HTTP or gRPC per ``OTEL_EXPORTER_OTLP_PROTOCOL``, endpoint and
    headers from the standard ``OTEL_EXPORTER_OTLP_*`` variables; ``console``: spans on
    stderr; unset or ``none``: off). ``OTEL_SERVICE_NAME`` names the service (default
    ``sconnect``). Returns whether tracing is on. A missing SDK or exporter package is
    logged and leaves tracing off: the server runs either way."""
    env = os.environ if environ is None else environ
    exporter_name = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter_name in ("", "none"):
        return enabled()
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

        exporter: SpanExporter
        if exporter_name == "console":
            exporter = ConsoleSpanExporter()
        elif exporter_name == "otlp":
            grpc = env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf").startswith("grpc")
            module = importlib.import_module(  # the exporter package of the otel extra, by name
                f"opentelemetry.exporter.otlp.proto.{'grpc' if grpc else 'http'}.trace_exporter")
            exporter = module.OTLPSpanExporter()
        else:
            log.error("tracing: OTEL_TRACES_EXPORTER=%s is not one of otlp, console, none: tracing stays off",
                      exporter_name)
            return False
    except ImportError as exc:
        log.error("tracing: OTEL_TRACES_EXPORTER=%s needs the OpenTelemetry SDK and exporter "
                  "(pip install 'scalytics-connect[otel]'): %s; tracing stays off", exporter_name, exc)
        return False
    provider = TracerProvider(resource=Resource.create({"service.name": env.get("OTEL_SERVICE_NAME", "sconnect")}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    log.info("tracing: spans exported by %s", exporter_name)
    return True
