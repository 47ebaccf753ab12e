"""The cattrs converter that turns schema-checked YAML data into config objects.

Our own converter, never the global one: it forbids unknown keys and its
primitive hooks reject instead of coercing (cattrs by default turns ``"false"``
into ``True`` and ``5`` into ``"5"``).  Units are parsed here, so a bad
duration is reported at its field with the forms we accept.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator
from types import MappingProxyType
from typing import Any

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, override

from ..strict import strict_converter
from . import tool_kinds
from .model import AgentMemory, AgentModel, ModelConfig, NamedModel, Remember, Resource, Tool, UpstreamTool
from .model_providers import providers
from .resource_kinds import kind_name, kinds
from .units import Bytes, Seconds, parse_duration, parse_size
from .yamldoc import PathSegment

_PATH_TOKEN = re.compile(r"\.(\w+)|\[(\d+)\]|\['((?:[^'\\]|\\.)*)'\]|\[\"((?:[^\"\\]|\\.)*)\"\]")


_WORDS = {str: "a string", int: "an integer", bool: "true or false", float: "a number"}


def _refuse(value: Any, expected: type) -> Exception:
    return ValueError(f"{value!r} is not {_WORDS[expected]}")


def _model_config(value: Any, _: type) -> Any:
    """A model block as its provider's config class (engine/config/model_providers.py)."""
    registered = providers()
    provider = registered.get(str(value.get("provider"))) if isinstance(value, dict) else None
    if provider is None:
        raise ValueError(f"provider must be one of {', '.join(map(repr, registered))}")
    return converter.structure(value, provider.config_class)


def _resource(value: Any, _: type) -> Any:
    """A resource file as its kind's config class (the kind: ``kind``, else ``scheme``)."""
    registered = kinds()
    kind = registered.get(kind_name(value) or "") if isinstance(value, dict) else None
    if kind is None:
        raise ValueError(f"kind must be one of {', '.join(map(repr, sorted(registered)))}")
    fields = {field.name for field in attrs.fields(kind.config_class)}
    # A fixed-scheme kind's class has no ``kind`` field: the schema already checked it names this kind.
    data = {key: item for key, item in value.items() if key != "kind" or key in fields}
    return converter.structure(data, kind.config_class)


def _network(value: Any, _: type) -> bool | tuple[Any, ...]:
    """``sandbox.network``: true/false, or the list of destinations as written (each entry
    is checked by ``checks.network_problems``, so that a bad one is located at its line)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, list):
        return tuple(
            MappingProxyType({key: tuple(item) if isinstance(item, list) else item for key, item in entry.items()})
            if isinstance(entry, dict) else entry
            for entry in value
        )  # fmt: skip
    raise ValueError(f"{value!r} is not true, false or a list of destinations")


def _agent_model(value: Any, _: type) -> Any:
    """An agent's ``model:``: a models.d/ name (checked once every file has loaded) or an inline block."""
    if value is None or isinstance(value, str):
        return value
    return converter.structure(value, ModelConfig)  # type: ignore[type-abstract]


def _named_model(value: Any, _: type) -> NamedModel:
    """A models.d/ file: ``name`` and ``description`` beside one provider's keys, at the top level.

    The provider's keys are structured on their own, so a failure's path is the
    key as written in the file (``timeout``, not ``model.timeout``).
    """
    if not isinstance(value, dict):
        raise ValueError("expected a mapping")
    rest = {key: item for key, item in value.items() if key not in ("name", "description")}
    return NamedModel(
        name=converter.structure(value.get("name"), str),
        description=converter.structure(value.get("description"), str),
        model=converter.structure(rest, ModelConfig),  # type: ignore[type-abstract]
    )


def _tool(value: Any, _: type) -> Tool:
    """A tools.d/ file declaring one tool. A kind registered with an ``options_class`` has the
    value of its key structured into ``Tool.options`` (a failure's path says ``options``:
    the loader names the key instead); a built-in kind's settings are fields of Tool."""
    declared = tool_kinds.declared(value) if isinstance(value, dict) else None
    if declared is None or declared.options_class is None:
        return _tool_structurer(None, None)(value, Tool)
    tool = _tool_structurer(declared.name, declared.options_class)(value, Tool)
    return attrs.evolve(tool, kind=declared.name)


@functools.cache
def _tool_structurer(key: str | None, options_class: type | None) -> Callable[[Any, type], Tool]:
    # ``kind`` is never read from YAML: a built-in kind's follows from its fields, another's is its key.
    if key is None:
        return make_dict_structure_fn(  # type: ignore[no-any-return]
            Tool, converter, kind=override(omit=True), options=override(omit=True), _cattrs_forbid_extra_keys=True
        )
    assert options_class is not None
    options: type = options_class
    return make_dict_structure_fn(  # type: ignore[no-any-return]
        Tool, converter, kind=override(omit=True), _cattrs_forbid_extra_keys=True,
        options=override(rename=key, struct_hook=lambda value, _: converter.structure(value, options)),
    )


def _remember(value: Any, _: type) -> Remember:
    """A rule's ``remember``: the word ``never``, or ``{max: DURATION}``."""
    if value == "never":
        return Remember(never=True)
    if not isinstance(value, dict) or set(value) != {"max"}:
        raise ValueError("remember must be 'never' or {max: DURATION}, e.g. {max: 8h}")
    bound = parse_duration(value["max"])
    if bound <= 0:
        raise ValueError("remember.max must be longer than 0s")
    return Remember(max=bound)
def _agent_memory(conv: cattrs.Converter) -> Any:
    """``memory: on`` / ``off`` (YAML booleans), or a mapping of AgentMemory's keys (then on unless it says not)."""
    keys = make_dict_structure_fn(AgentMemory, conv, _cattrs_forbid_extra_keys=True)

    def hook(value: Any, _: type) -> AgentMemory:
        if isinstance(value, bool):
            return AgentMemory(enabled=value)
        if not isinstance(value, dict):
            raise ValueError(f"{value!r} is not on, off or a mapping")
        return keys({"enabled": True, **value}, AgentMemory)

    return hook


def make_converter() -> cattrs.Converter:
    conv = strict_converter(_refuse)
    conv.register_structure_hook(Seconds, lambda value, _: parse_duration(value))
    conv.register_structure_hook(Bytes, lambda value, _: parse_size(value))
    # A predicate, not a class hook: ModelConfig is a Protocol, which dispatch on classes cannot test.
    conv.register_structure_hook_func(lambda type_: type_ is ModelConfig, _model_config)
    conv.register_structure_hook(AgentModel, _agent_model)
    conv.register_structure_hook(bool | tuple[Any, ...], _network)
    conv.register_structure_hook(NamedModel, _named_model)
    conv.register_structure_hook(Resource, _resource)
    conv.register_structure_hook(Remember, _remember)
    conv.register_structure_hook(AgentMemory, _agent_memory(conv))
    conv.register_structure_hook(Tool, _tool)
    # `as` is a Python keyword: the field is `as_`, the YAML key `as`.
    conv.register_structure_hook(
        UpstreamTool,
        make_dict_structure_fn(UpstreamTool, conv, as_=override(rename="as"), _cattrs_forbid_extra_keys=True),
    )
    return conv


converter = make_converter()


def structure_errors(exc: Exception) -> Iterator[tuple[list[PathSegment], str]]:
    """(path, message) for every leaf failure of a cattrs structuring error."""
    for line in cattrs.transform_error(exc, format_exception=_format):
        message, _, where = line.rpartition(" @ ")
        yield _parse_path(where), message


def _format(exc: BaseException, type_: type | None) -> str:
    if isinstance(exc, ValueError):
        return str(exc)
    if isinstance(exc, cattrs.ForbiddenExtraKeysError):
        return f"unknown keys: {', '.join(sorted(exc.extra_fields))}"
    if isinstance(exc, KeyError):
        return "required key is missing"
    return cattrs.v.format_exception(exc, type_)


def _parse_path(where: str) -> list[PathSegment]:
    path: list[PathSegment] = []
    for attr, index, single, double in _PATH_TOKEN.findall(where.removeprefix("$")):
        if attr:
            path.append(attr)
        elif index:
            path.append(int(index))
        else:
            path.append(single or double)
    return path
