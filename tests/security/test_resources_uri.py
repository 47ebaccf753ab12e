"""Resource URIs with malformed percent-escapes (issue 11, item 18).

- test_malformed_escapes_are_invalid_arguments_and_audited: against a real server on
  the shipped example, reads ``%ff`` (not UTF-8), ``%c0%ae`` (an overlong ".") and a
  bare ``%`` under file://local; each answer is ``invalid_arguments`` (not
  ``internal``), the server keeps answering, and the audit log holds a
  ``resource_read`` record for each URI with that outcome.
"""

from __future__ import annotations

import pytest
import trio

from engine.audit import query
from engine.client import ServerError, open_client
from engine.protocol import ResourceRequest, ResourceResponse, new_id
from tests.engine.conftest import RunningServer, config_dir, server, start_server, state_dir  # noqa: F401 (fixtures)

MALFORMED = (
    "file://local/documents/%ff",
    "file://local/documents/%c0%ae%c0%ae/secrets/example-credentials.txt",
    "file://local/documents/100%",
)


async def test_malformed_escapes_are_invalid_arguments_and_audited(server: RunningServer) -> None:  # noqa: F811
    with trio.fail_after(20):
        async with open_client(server.url, server.token()) as client:
            for uri in MALFORMED:
                with pytest.raises(ServerError) as caught:
                    await client.request(ResourceRequest(id=new_id(), uri=uri))
                assert caught.value.code == "invalid_arguments", (uri, caught.value.message)
            still = await client.request(ResourceRequest(id=new_id(), uri="file://local/documents/welcome.md"))
            assert isinstance(still, ResourceResponse)
    records = await trio.to_thread.run_sync(lambda: query(server.settings.state_dir, kind="resource_read"))
    outcomes = {record.target: record.outcome for record in records}
    for uri in MALFORMED:
        assert outcomes.get(uri) == "invalid_arguments", uri
