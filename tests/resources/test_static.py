"""``kind: static`` hosts: loaded from real YAML, read directly and through a real server."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
import trio

from engine.audit import query
from engine.client import ServerError, open_client
from engine.config import load_config
from engine.errors import ConfigError
from engine.protocol import ResourceList, ResourceListRequest, ResourceRequest, ResourceResponse, new_id
from engine.resources import ResourceError, ResourceHosts
from tests.engine.conftest import start_server, state_dir  # noqa: F401 (fixtures)

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)

TEXT = """\
kind: static
scheme: test
name: static-text
description: A fixed text document.
documents:
  - text: This is the content of the static text resource.
"""

BINARY = f"""\
kind: static
scheme: test
name: static-binary
description: A fixed image.
documents:
  - base64: {base64.b64encode(PNG).decode()}
    mime_type: image/png
"""

TEMPLATE = """\
kind: static
scheme: test
name: template
description: Data by id.
documents:
  - path: "{id}/data"
    description: The data of one id.
    mime_type: application/json
    text: '{"id": "{id}", "templateTest": true, "data": "Data for ID: {id}"}'
  - path: handbook
    file: docs/handbook.md
  - path: counted/{n}
    params: {n: integer}
    text: "n is {n}"
"""

POLICY = """\
name: readers
description: Members read the static documents.
roles:
  member: {description: Everyone.}
rules:
  - id: members-read-test
    effect: allow
    subjects: {roles: [member]}
    actions: [resource.read]
    targets: {resources: ["test://static-*", "test://template/**"]}
"""


def static_config(root: Path) -> Path:
    (root / "resources.d").mkdir(parents=True)
    (root / "policies").mkdir()
    (root / "docs").mkdir()
    (root / "docs" / "handbook.md").write_text("# Handbook\n")
    for name, text in (("text", TEXT), ("binary", BINARY), ("template", TEMPLATE)):
        (root / "resources.d" / f"{name}.yaml").write_text(text)
    (root / "policies" / "readers.yaml").write_text(POLICY)
    return root


@pytest.fixture
def hosts(tmp_path: Path) -> ResourceHosts:
    return ResourceHosts(load_config(static_config(tmp_path / "config")), tmp_path / "state")


async def test_text_binary_template_and_file(hosts: ResourceHosts) -> None:
    text = await hosts.read("test://static-text")
    assert (text.data, text.mime_type, text.truncated) == (
        "This is the content of the static text resource.", "text/plain", False)
    binary = await hosts.read("test://static-binary")
    assert (binary.data, binary.mime_type) == (PNG, "image/png")
    templated = await hosts.read("test://template/42/data")
    assert templated.mime_type == "application/json"
    assert templated.data == '{"id": "42", "templateTest": true, "data": "Data for ID: 42"}'
    assert (await hosts.read("test://template/counted/7")).data == "n is 7"
    handbook = await hosts.read("test://template/handbook")
    assert (handbook.data, handbook.mime_type) == ("# Handbook\n", "text/markdown")


async def test_a_value_is_filled_in_once_never_expanded_again(hosts: ResourceHosts) -> None:
    content = await hosts.read("test://template/%7Bid%7D/data")
    assert content.data == '{"id": "{id}", "templateTest": true, "data": "Data for ID: {id}"}'


@pytest.mark.parametrize(
    ("uri", "code"),
    [
        ("test://static-text/more", "not_found"),
        ("test://template/42", "not_found"),
        ("test://template/42/data/x", "not_found"),
        ("test://nothing", "not_found"),
        ("other://static-text", "not_found"),
        ("test://template/counted/seven", "invalid_arguments"),
        ("test://template/..%2f/data", "invalid_arguments"),
    ],
)
async def test_unknown_and_bad_uris(hosts: ResourceHosts, uri: str, code: str) -> None:
    with pytest.raises(ResourceError) as caught:
        await hosts.read(uri)
    assert caught.value.code == code


async def test_a_file_swapped_for_a_symlink_is_not_followed(tmp_path: Path) -> None:
    root = static_config(tmp_path / "config")
    hosts = ResourceHosts(load_config(root), tmp_path / "state")
    (tmp_path / "secret.txt").write_text("secret")
    (root / "docs" / "handbook.md").unlink()
    os.symlink(tmp_path / "secret.txt", root / "docs" / "handbook.md")
    with pytest.raises(ResourceError) as caught:
        await hosts.read("test://template/handbook")
    assert caught.value.code == "forbidden" and "secret" not in caught.value.message.replace("secret.txt", "")


def test_listing_gives_each_document_as_a_uri_template(hosts: ResourceHosts) -> None:
    assert {t.uri_template for t in hosts.templates()} == {
        "test://static-text", "test://static-binary", "test://template/{id}/data",
        "test://template/handbook", "test://template/counted/{n}",
    }


async def test_through_a_real_server_under_policy_listing_and_audit(
    start_server, tmp_path: Path  # type: ignore[no-untyped-def]  # noqa: F811
) -> None:
    server = await start_server(static_config(tmp_path / "config"))
    with trio.fail_after(20):
        async with open_client(server.url, server.token("alice", ("member",))) as client:
            reply = await client.request(ResourceRequest(id=new_id(), uri="test://template/7/data"))
            assert isinstance(reply, ResourceResponse) and "Data for ID: 7" in (reply.content or "")
            binary = await client.request(ResourceRequest(id=new_id(), uri="test://static-binary"))
            assert isinstance(binary, ResourceResponse) and base64.b64decode(binary.content_base64 or "") == PNG
            with pytest.raises(ServerError) as caught:
                await client.request(ResourceRequest(id=new_id(), uri="test://template/7/nothing"))
            assert caught.value.code == "not_found"
            listing = await client.request(ResourceListRequest(id=new_id()))
            assert isinstance(listing, ResourceList)
            assert "test://template/{id}/data" in {item.uri_template for item in listing.resources}
        async with open_client(server.url, server.token("mallory", ("stranger",))) as stranger:
            with pytest.raises(ServerError) as refused:
                await stranger.request(ResourceRequest(id=new_id(), uri="test://static-text"))
            assert refused.value.code == "forbidden"
    records = await trio.to_thread.run_sync(lambda: query(server.settings.state_dir, kind="resource_read"))
    assert {(r.target, r.outcome) for r in records} >= {
        ("test://template/7/data", "ok"), ("test://static-binary", "ok"), ("test://template/7/nothing", "not_found"),
    }


def test_the_policy_matrix_shows_a_host_served_at_its_own_uri(tmp_path: Path) -> None:
    from engine.policy import cell

    config = load_config(static_config(tmp_path / "config"))
    assert cell(config, "member", "test://static-text/**").label == "allow"
    assert cell(config, "member", "test://template/**").label == "allow"


BAD = [
    ("documents: []\n", 5, "documents", "should be non-empty"),
    ("documents:\n  - text: a\n    base64: YQ==\n", 6, "documents[0]", "declare exactly one of 'text', 'base64'"),
    ("documents:\n  - base64: '!!'\n", 6, "documents[0].base64", "not valid base64"),
    ("documents:\n  - file: missing.txt\n", 6, "documents[0].file", "missing.txt: no such file"),
    ("documents:\n  - file: ../outside.txt\n", 6, "documents[0].file", "must be a plain path"),
    ("documents:\n  - file: link.txt\n", 6, "documents[0].file", "symlinks are not followed"),
    ("documents:\n  - path: 'x{id}'\n    text: a\n", 6, "documents[0].path", "a placeholder must be a whole segment"),
    ("documents:\n  - path: 'a/%2e'\n    text: a\n", 6, "documents[0].path", "is not a plain path segment"),
    ("documents:\n  - path: '{id}'\n    text: '{idd}'\n", 6, "documents[0]", "'idd' is used but is not a"),
    ("documents:\n  - text: a\n  - text: b\n", 7, "documents[1].path", "is already served by documents[0]"),
    ("documents:\n  - text: abcdef\nmax_size: 4B\n", 6, "documents[0].text", "more than max_size"),
    ("documents:\n  - text: a\n    mime: text/plain\n", 7, "documents[0].mime", "unknown key 'mime'"),
]


@pytest.mark.parametrize(("tail", "line", "field", "message"), BAD)
def test_bad_config_is_located(tmp_path: Path, tail: str, line: int, field: str, message: str) -> None:
    (tmp_path / "resources.d").mkdir()
    (tmp_path / "outside.txt").write_text("x")
    os.symlink(tmp_path / "outside.txt", tmp_path / "link.txt")
    (tmp_path / "resources.d" / "s.yaml").write_text("kind: static\nscheme: test\nname: s\ndescription: d\n" + tail)
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)
    [problem] = caught.value.problems
    assert (problem.file, problem.line, problem.field) == ("resources.d/s.yaml", line, field), problem
    assert message in problem.message, problem


@pytest.mark.parametrize(
    ("head", "field", "message"),
    [
        ("kind: static\nscheme: file\n", "scheme", "belongs to the file kind"),
        ("kind: statik\nscheme: test\n", "kind", "'statik' is not one of"),
        ("scheme: test\n", "scheme", "'test' is not one of 'api', 'db', 'file'"),
    ],
)
def test_bad_kind_or_scheme_is_located(tmp_path: Path, head: str, field: str, message: str) -> None:
    (tmp_path / "resources.d").mkdir()
    (tmp_path / "resources.d" / "s.yaml").write_text(head + "name: s\ndescription: d\ndocuments: [{text: a}]\n")
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)
    assert any(p.field == field and message in p.message for p in caught.value.problems), caught.value
