"""JSON Schema validation of what clients send, at a bounded cost.

Tool arguments arrive from clients, and some schemas do too (tools a client offers in
its ``tool_list``).  Plain jsonschema has three ways to hold the event loop for
seconds or hours: ``pattern`` / ``patternProperties`` run Python's backtracking ``re``
(``^(a+)+$`` on 30 ``a`` and a ``!``), ``uniqueItems`` is quadratic on unhashable
items, and a schema that is large, or whose ``$ref`` s form a wide graph, multiplies
the work per argument.  Here:

- ``pattern``, ``patternProperties`` and the ``regex`` format run on RE2
  (:mod:`engine.linear_re`): linear in the text;
- ``uniqueItems`` hashes each item's canonical JSON: linear;
- every keyword application checks a deadline, so a validation that runs past its
  budget stops with :class:`BudgetExceeded` instead of running on;
- validations that may be large (any offered schema, any large arguments) run in a
  worker thread (at most :data:`THREADS` at once), so the event loop keeps serving
  everyone else while one client's frame is checked.

Valid small arguments against a configured schema, the common case, are first given to
a yes/no check compiled once per schema (:mod:`engine.protocol._fastcheck`, with RE2
for patterns): it says "valid" only where jsonschema would, in a few microseconds instead
of a jsonschema walk's tens; anything else, and every schema with a keyword it does
not know, goes to jsonschema, which words the problems.

Offered schemas are checked once, when offered (:func:`offered_schema_problem`): size,
RE2-compatible patterns, no ``unevaluated*`` keywords (jsonschema evaluates those with
Python's ``re`` internally), and the metaschema -- under the same deadline.
"""

from __future__ import annotations

import itertools
import json
import reprlib
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import jsonschema
import trio
from jsonschema import ValidationError
from jsonschema.validators import extend

from ..linear_re import RegexError, compile_linear
from ..protocol._fastcheck import Check, compile_check

__all__ = ["BudgetExceeded", "argument_problems", "offered_schema_problem", "problems_now", "tool_argument_problems"]

# Worker threads validating at once; more validations wait for one (backpressure).
THREADS = 2
# What a validation may cost before it is refused: in a worker thread, and on the loop.
# Both are wall-clock fuses, generous so that a busy machine never refuses a real call: on
# the loop only small arguments against the operator's own schemas are checked, in microseconds.
THREAD_BUDGET_S = 1.0
INLINE_BUDGET_S = 0.5
# Arguments up to this size (canonical JSON bytes), against a schema from the configuration,
# are checked on the loop: it is the common case, and a thread round trip would cost more.
INLINE_MAX_BYTES = 2048
# Keywords refused in offered schemas: jsonschema evaluates them with Python's re internally.
_REFUSED_OFFERED = ("unevaluatedProperties", "unevaluatedItems")

_deadline = threading.local()
_threads: trio.lowlevel.RunVar[trio.CapacityLimiter] = trio.lowlevel.RunVar("argcheck_threads")


class BudgetExceeded(Exception):
    """The validation ran past its time budget and was stopped."""


def _check_deadline() -> None:
    deadline = getattr(_deadline, "at", None)
    if deadline is not None and time.monotonic() > deadline:
        raise BudgetExceeded


def _timed(keyword: Any) -> Any:
    def checked(validator: Any, value: Any, instance: Any, schema: Any) -> Any:
        _check_deadline()
        return keyword(validator, value, instance, schema)

    return checked


def _search(pattern: str, text: str) -> bool:
    try:
        return compile_linear(pattern).search(text) is not None
    except RegexError:
        # Offered schemas are refused with such a pattern; a configured one is the
        # operator's mistake and must not fall back to a backtracking engine.
        raise ValidationError(f"pattern {pattern!r} is not supported: RE2 cannot compile it") from None


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _search(pattern, instance):
        shown = instance if len(instance) <= 80 else instance[:77] + "..."
        yield ValidationError(f"{shown!r} does not match {pattern!r}")


def _pattern_properties(validator: Any, properties: Mapping[str, Any], instance: Any, schema: Any) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in properties.items():
        for key, value in instance.items():
            _check_deadline()
            if _search(pattern, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


# Sub-errors kept under an anyOf/oneOf error (jsonschema keeps every error of every branch:
# 200 failing branches x 40,000 items is 8 million objects, and their garbage collection
# alone holds the interpreter -- every thread, the event loop's included -- for a second).
_CONTEXT = 8
_short = reprlib.Repr()
_short.maxstring, _short.maxother, _short.maxlist, _short.maxdict, _short.maxlevel = 60, 60, 4, 4, 2


def _any_of(validator: Any, branches: list[Any], instance: Any, schema: Any) -> Iterator[ValidationError]:
    context: list[ValidationError] = []
    for index, branch in enumerate(branches):
        first = next(validator.descend(instance, branch, schema_path=index), None)
        if first is None:
            return
        if len(context) < _CONTEXT:
            context.append(first)
    yield ValidationError(f"{_short.repr(instance)} is not valid under any of the given schemas", context=context)


def _one_of(validator: Any, branches: list[Any], instance: Any, schema: Any) -> Iterator[ValidationError]:
    context: list[ValidationError] = []
    valid: list[int] = []
    for index, branch in enumerate(branches):
        first = next(validator.descend(instance, branch, schema_path=index), None)
        if first is None:
            valid.append(index)
        elif len(context) < _CONTEXT:
            context.append(first)
    if not valid:
        yield ValidationError(f"{_short.repr(instance)} is not valid under any of the given schemas", context=context)
    elif len(valid) > 1:
        yield ValidationError(f"{_short.repr(instance)} is valid under each of the subschemas {valid} (oneOf)")


def _canonical(value: Any) -> str:
    # JSON Schema equality: 1 == 1.0, but true != 1 (json.dumps keeps them apart).
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _unique_items(validator: Any, unique: bool, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if not unique or not validator.is_type(instance, "array"):
        return
    seen: set[str] = set()
    for item in instance:
        key = _canonical(float(item) if type(item) is int else item)
        if key in seen:
            yield ValidationError("the array has non-unique elements")
            return
        seen.add(key)


def _is_regex(instance: object) -> bool:
    if not isinstance(instance, str):
        return True
    try:
        compile_linear(instance)
    except RegexError:
        return False
    return True


def _format_checker() -> jsonschema.FormatChecker:
    checker = jsonschema.FormatChecker()
    checker.checkers = dict(jsonschema.Draft202012Validator.FORMAT_CHECKER.checkers)
    checker.checkers["regex"] = (_is_regex, ())
    return checker


_KEYWORDS = dict(jsonschema.Draft202012Validator.VALIDATORS)
_KEYWORDS.update({
    "pattern": _pattern, "patternProperties": _pattern_properties, "uniqueItems": _unique_items,
    "anyOf": _any_of, "oneOf": _one_of,
})
BoundedValidator: Any = extend(
    jsonschema.Draft202012Validator, {name: _timed(fn) for name, fn in _KEYWORDS.items()}
)
FORMATS = _format_checker()
_META = BoundedValidator(jsonschema.Draft202012Validator.META_SCHEMA, format_checker=FORMATS)


# Validators built once per schema: building one (with its reference registry) costs about
# what a small validation does, on every call. Keyed by identity, the schema kept alive with its
# validator so that its id stays its own; a full cache starts over (offered schemas come and go).
_VALIDATORS: dict[int, tuple[Mapping[str, Any], Any]] = {}
_MAX_VALIDATORS = 256


def _validator(schema: Mapping[str, Any]) -> Any:
    cached = _VALIDATORS.get(id(schema))
    if cached is not None and cached[0] is schema:
        return cached[1]
    validator = BoundedValidator(schema, format_checker=FORMATS)
    if len(_VALIDATORS) >= _MAX_VALIDATORS:
        _VALIDATORS.clear()
    _VALIDATORS[id(schema)] = (schema, validator)
    return validator


# The compiled yes/no check of each configured schema (None: a keyword it does not support),
# kept like the validators above.
_FAST: dict[int, tuple[Mapping[str, Any], Check | None]] = {}


def _linear_search(pattern: str) -> Any:
    return compile_linear(pattern).search


def _fast_check(schema: Mapping[str, Any]) -> Check | None:
    cached = _FAST.get(id(schema))
    if cached is not None and cached[0] is schema:
        return cached[1]
    check: Check | None
    try:
        defs = schema.get("$defs", {})
        check = compile_check(schema, defs if isinstance(defs, Mapping) else {}, search_with=_linear_search)
    except (ValueError, RecursionError):
        check = None  # jsonschema alone, as before
    if len(_FAST) >= _MAX_VALIDATORS:
        _FAST.clear()
    _FAST[id(schema)] = (schema, check)
    return check


def problems_now(schema: Mapping[str, Any], arguments: Any, budget_s: float) -> list[str]:
    """Every way ``arguments`` fails ``schema`` (readable lines), computed here and now.

    Raises :class:`BudgetExceeded` past ``budget_s``.  Thread-safe: the deadline is per thread.
    """
    _deadline.at = time.monotonic() + budget_s
    try:
        validator = _validator(schema)
        found = list(itertools.islice(validator.iter_errors(arguments), MAX_PROBLEMS + 1))
        errors = sorted(found[:MAX_PROBLEMS], key=lambda e: [str(p) for p in e.absolute_path])
    except RecursionError:
        raise BudgetExceeded from None
    finally:
        _deadline.at = None
    lines = [_line(error) for error in errors]
    if len(found) > MAX_PROBLEMS:
        lines.append(f"arguments: (more problems not listed: the first {MAX_PROBLEMS} are shown)")
    return lines


# Problems reported for one call (the rest are counted as "more"): enough to fix the call.
MAX_PROBLEMS = 20
# jsonschema quotes the whole offending value ("[...10,000 items...] is too long"): a problem
# line goes to the client, the model and the audit log, so it is cut.
MAX_PROBLEM_CHARS = 300


def _line(error: ValidationError) -> str:
    message = error.message
    shown = repr(error.instance)
    if len(shown) > 80 and message.startswith(shown):
        message = shown[:77] + "..." + message[len(shown):]
    line = f"{'.'.join(map(str, error.absolute_path)) or 'arguments'}: {message}"
    return line if len(line) <= MAX_PROBLEM_CHARS else line[: MAX_PROBLEM_CHARS - 3] + "..."


async def argument_problems(schema: Mapping[str, Any], arguments: Any, *, trusted_schema: bool) -> list[str]:
    """:func:`problems_now`, on the loop when small and trusted, else in a worker thread.

    ``trusted_schema``: the schema comes from the configuration (not from a client).
    Raises :class:`BudgetExceeded` when the check costs more than its budget.
    """
    if trusted_schema:
        try:
            small = len(json.dumps(arguments, separators=(",", ":"), default=str)) <= INLINE_MAX_BYTES
        except (ValueError, RecursionError):
            small = False
        if small:
            fast = _fast_check(schema)
            if fast is not None and fast(arguments):
                return []
            return problems_now(schema, arguments, INLINE_BUDGET_S)
    return await trio.to_thread.run_sync(problems_now, schema, arguments, THREAD_BUDGET_S, limiter=_limiter())


TOO_COSTLY = "arguments: checking them against the tool's schema took longer than allowed; send smaller arguments"


def not_an_object(arguments: Any) -> list[str]:
    """The one problem of arguments that are not a JSON object (empty when they are one)."""
    if isinstance(arguments, dict):
        return []
    shown = repr(arguments)
    return [f"arguments: {shown if len(shown) <= 80 else shown[:77] + '...'} is not of type 'object'"]


async def tool_argument_problems(parameters: Mapping[str, Any], arguments: Any, *, trusted_schema: bool) -> list[str]:
    """Every way a call's ``arguments`` fail the tool's ``parameters``; one problem when too costly to say."""
    if not isinstance(arguments, dict):
        return not_an_object(arguments)
    try:
        return await argument_problems(parameters, arguments, trusted_schema=trusted_schema)
    except BudgetExceeded:
        return [TOO_COSTLY]


def _limiter() -> trio.CapacityLimiter:
    try:
        return _threads.get()
    except LookupError:
        limiter = trio.CapacityLimiter(THREADS)
        _threads.set(limiter)
        return limiter


def _offered_problem_now(schema: Any, max_bytes: int) -> str | None:
    try:
        size = len(json.dumps(schema, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    except (TypeError, ValueError, RecursionError):
        return "parameters is not plain JSON"
    if size > max_bytes:
        return f"parameters is {size} bytes of JSON Schema; at most {max_bytes} are accepted"
    for where, keyword, value in _walk(schema):
        if keyword in _REFUSED_OFFERED:
            return f"{where}: {keyword} is not supported in offered tool schemas"
        patterns = [value] if keyword == "pattern" else list(value) if keyword == "patternProperties" else []
        for pattern in patterns:
            if not isinstance(pattern, str):
                continue
            try:
                compile_linear(pattern)
            except RegexError as exc:
                return f"{where}: pattern {pattern[:80]!r}: {exc}"
    _deadline.at = time.monotonic() + THREAD_BUDGET_S
    try:
        error = jsonschema.exceptions.best_match(_META.iter_errors(schema))
    except (BudgetExceeded, RecursionError):
        return "parameters is too costly to check"
    finally:
        _deadline.at = None
    return None if error is None else f"parameters is not a valid JSON Schema: {error.message}"


def _walk(node: Any, where: str = "parameters") -> Iterator[tuple[str, str, Any]]:
    """(location, keyword, value) of every mapping entry, iteratively (the schema may be deep)."""
    stack = [(where, node)]
    while stack:
        here, current = stack.pop()
        if isinstance(current, dict):
            for key, value in current.items():
                yield here, key, value
                stack.append((f"{here}.{key}", value))
        elif isinstance(current, list):
            stack.extend((f"{here}[{index}]", value) for index, value in enumerate(current))


async def offered_schema_problem(schema: Any, *, max_bytes: int) -> str | None:
    """Why a client-offered tool schema is refused (None when accepted); checked in a worker thread."""
    return await trio.to_thread.run_sync(_offered_problem_now, schema, max_bytes, limiter=_limiter())
