"""MCP content blocks in tool results: the contract, its checks, a text for models, audit digests.

A tool may return content blocks (text, image, audio, embedded resource, resource link:
the Model Context Protocol's own shapes) instead of plain JSON: a Python or command tool
that declares ``output: content`` prints ``{"content": [blocks], "structuredContent":
{...}}`` (the second key optional), and an MCP server's tool returns them in its
result.  Either way the blocks are checked here before anyone sees them:

- their shape, against ``#/$defs/content_block.<type>`` of the protocol schema (the one
  contract for every language): a known ``type``, the fields that type needs
  (``mimeType`` for images and audio), nothing else, and per-block size caps;
- what a schema cannot say: every base64 string decodes (standard alphabet, padded,
  no stray characters), at most :data:`MAX_BLOCKS` blocks, at most
  :data:`MAX_TOTAL_BYTES` of decoded data and text together.

A failed check raises :class:`ContentError` naming the block and the field.  The cost is
linear in the size of the output, which the tool's ``max_output`` already bounds.

The blocks travel as they are (``agent_result.content`` on the WebSocket, MCP content
on the MCP front door).  Models and older clients read ``output`` instead: the tool's
``structuredContent``, else :func:`text_output` (the text blocks, and one line such as
``[image/png, 12 KiB]`` for each other block).  The audit log keeps :func:`digests`
(type, media type, size, SHA-256), never the bytes.
"""

from __future__ import annotations

import binascii
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from ._schema import _describe, json_path, validator_for

__all__ = ["ContentError", "check_blocks", "describe", "digests", "from_tool_output", "structured_part", "text_output"]

KINDS = ("text", "image", "audio", "resource", "resource_link")
MAX_BLOCKS = 64
MAX_BLOCK_BYTES = 2 * 2**20  # one image, audio or blob, decoded; the schema says so in base64 characters
MAX_TOTAL_BYTES = 8 * 2**20  # every block's decoded data and text together
_MAX_PROBLEMS = 10

Block = Mapping[str, Any]

_VALIDATORS = {kind: validator_for(f"content_block.{kind}") for kind in KINDS}


class ContentError(ValueError):
    """Content blocks that break the contract; ``problems`` names each block and field."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)[:_MAX_PROBLEMS]
        super().__init__("invalid content blocks: " + "; ".join(self.problems))


def _decoded_size(text: str, where: str, problems: list[str]) -> int:
    """The size of base64 ``text`` decoded, or a problem when it is not strict base64."""
    try:
        return len(binascii.a2b_base64(text, strict_mode=True))
    except (binascii.Error, ValueError):
        problems.append(f"{where}: not valid base64 (standard alphabet, padded, nothing else)")
        return 0


def _problem(error: Any) -> str:
    """A readable problem for one schema error, the field first; never the offending value."""
    path, message = _describe(error)
    if error.validator == "oneOf":
        message = "needs exactly one of text and blob"
    elif error.validator == "pattern" and str(path).endswith("mimeType"):
        message = "must be a media type such as image/png"
    field = path.removeprefix("$.").removeprefix("$")
    return f"{field}: {message}" if field else message


def _check_block(block: Any, index: int, problems: list[str]) -> int:
    """Check one block; the bytes it holds (decoded data and text)."""
    where = f"content[{index}]"
    if not isinstance(block, Mapping):
        problems.append(f"{where}: a block must be an object, not {type(block).__name__}")
        return 0
    kind = block.get("type")
    if kind not in _VALIDATORS:
        shown = repr(kind)[:40] if isinstance(kind, str) else type(kind).__name__
        problems.append(f"{where}: unknown block type {shown} (known: {', '.join(KINDS)})")
        return 0
    errors = list(_VALIDATORS[kind].iter_errors(block))
    if errors:
        for error in errors[:3]:
            problems.append(f"{where} ({kind}): {_problem(error)}")
        return 0
    if kind == "text":
        return len(block["text"].encode("utf-8", "surrogatepass"))
    if kind in ("image", "audio"):
        return _decoded_size(block["data"], f"{where} ({kind}): data", problems)
    if kind == "resource":
        resource = block["resource"]
        if "blob" in resource:
            return _decoded_size(resource["blob"], f"{where} (resource): resource.blob", problems)
        return len(resource["text"].encode("utf-8", "surrogatepass"))
    return 0


def check_blocks(blocks: Any) -> tuple[dict[str, Any], ...]:
    """``blocks`` checked against the contract (module docstring); ContentError otherwise."""
    if not isinstance(blocks, list) or not blocks:
        raise ContentError(["content must be a non-empty list of blocks"])
    if len(blocks) > MAX_BLOCKS:
        raise ContentError([f"content has {len(blocks)} blocks; at most {MAX_BLOCKS} are allowed"])
    problems: list[str] = []
    total = 0
    for index, block in enumerate(blocks):
        total += _check_block(block, index, problems)
        if len(problems) >= _MAX_PROBLEMS:
            break
    if not problems and total > MAX_TOTAL_BYTES:
        problems.append(f"content holds {total} bytes; at most {MAX_TOTAL_BYTES} are allowed")
    if problems:
        raise ContentError(problems)
    return tuple(dict(block) for block in blocks)


def from_tool_output(output: Any) -> tuple[Any, tuple[dict[str, Any], ...]]:
    """A content tool's output (its parsed stdout) as (what ``output`` shows, the blocks)."""
    if not isinstance(output, Mapping):
        shown = "plain text" if output is None or isinstance(output, str) else type(output).__name__
        raise ContentError([f'a tool with output: content must print {{"content": [...]}}, not {shown}'])
    if set(output) == {"text"}:
        # How the sandbox wraps stdout that is not JSON, or was cut at max_output.
        raise ContentError(["the output is not one JSON object (or was cut at max_output)"])
    extra = sorted(str(key) for key in output if key not in ("content", "structuredContent"))
    if extra:
        raise ContentError([f"unexpected key {json_path([extra[0]]).removeprefix('$.')} beside content "
                            "(only content and structuredContent)"])
    blocks = check_blocks(output.get("content"))
    structured = output.get("structuredContent")
    if structured is not None and not isinstance(structured, Mapping):
        raise ContentError(["structuredContent must be an object"])
    return (dict(structured) if structured is not None else text_output(blocks)), blocks


def _size(count: int) -> str:
    if count < 1024:
        return f"{count} B"
    if count < 2**20:
        return f"{count / 1024:.3g} KiB"
    return f"{count / 2**20:.3g} MiB"


def _b64_size(text: str) -> int:
    return len(text) * 3 // 4 - text[-2:].count("=")


def describe(block: Block) -> str:
    """One line for a non-text block: ``[image/png, 12 KiB]``, ``[resource test://x, text/plain, 37 B]``."""
    kind = block.get("type")
    if kind in ("image", "audio"):
        return f"[{block.get('mimeType') or kind}, {_size(_b64_size(str(block.get('data', ''))))}]"
    if kind == "resource":
        resource = block.get("resource") or {}
        held = resource.get("text")
        blob = str(resource.get("blob", ""))
        size = len(held.encode("utf-8", "surrogatepass")) if isinstance(held, str) else _b64_size(blob)
        mime = resource.get("mimeType") or ("text/plain" if isinstance(held, str) else "application/octet-stream")
        return f"[resource {resource.get('uri')}, {mime}, {_size(size)}]"
    if kind == "resource_link":
        mime = f", {block['mimeType']}" if block.get("mimeType") else ""
        return f"[link {block.get('uri')} ({block.get('name')}{mime})]"
    return f"[{kind}]"


def summary(blocks: Sequence[Block]) -> str:
    """The blocks as text: text as it is, an embedded text resource's text under its line, a line for the rest."""
    lines: list[str] = []
    for block in blocks:
        if block.get("type") == "text":
            lines.append(str(block.get("text", "")))
            continue
        lines.append(describe(block))
        resource = block.get("resource") if block.get("type") == "resource" else None
        if isinstance(resource, Mapping) and isinstance(resource.get("text"), str):
            lines.append(resource["text"])
    return "\n".join(lines)


def text_output(blocks: Sequence[Block]) -> dict[str, str]:
    """What models and older clients read for blocks without structuredContent."""
    return {"text": summary(blocks)}


def structured_part(output: Any, blocks: Sequence[Block]) -> dict[str, Any] | None:
    """The structuredContent an ``output`` holds beside ``blocks`` (None when it is just their text)."""
    if not isinstance(output, Mapping) or output == text_output(blocks):
        return None
    return dict(output)


def _sha256_of_b64(text: str) -> tuple[int, str]:
    data = binascii.a2b_base64(text)
    return len(data), hashlib.sha256(data).hexdigest()


def digests(blocks: Sequence[Block]) -> list[dict[str, Any]]:
    """What the audit log keeps of each block: type, media type, URI, size and SHA-256 of its bytes."""
    out: list[dict[str, Any]] = []
    for block in blocks:
        kind = block.get("type")
        entry: dict[str, Any] = {"type": kind}
        payload: bytes | None = None
        if kind == "text":
            payload = str(block.get("text", "")).encode("utf-8", "surrogatepass")
        elif kind in ("image", "audio"):
            entry["mime_type"] = block.get("mimeType")
            entry["bytes"], entry["sha256"] = _sha256_of_b64(str(block.get("data", "")))
        elif kind == "resource":
            resource = block.get("resource") or {}
            entry["uri"], entry["mime_type"] = resource.get("uri"), resource.get("mimeType")
            if "blob" in resource:
                entry["bytes"], entry["sha256"] = _sha256_of_b64(str(resource["blob"]))
            else:
                payload = str(resource.get("text", "")).encode("utf-8", "surrogatepass")
        elif kind == "resource_link":
            entry["uri"], entry["mime_type"] = block.get("uri"), block.get("mimeType")
        if payload is not None:
            entry["bytes"], entry["sha256"] = len(payload), hashlib.sha256(payload).hexdigest()
        out.append({key: value for key, value in entry.items() if value is not None})
    return out


def with_content(result: Any) -> Any:
    """A sandbox result of an ``output: content`` tool, its blocks checked and split from ``output``.

    An ``ok`` result whose output breaks the contract becomes an ``error`` with the
    problems as its message; other results are returned as they are.
    """
    if result.status != "ok":
        return result
    try:
        output, blocks = from_tool_output(result.output)
    except ContentError as exc:
        return attrs.evolve(result, status="error", output=None, message=str(exc))
    return attrs.evolve(result, output=output, content=blocks)
