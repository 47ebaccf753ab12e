"""The official MCP conformance suite (``@modelcontextprotocol/conformance``, Node 22)
against our MCP listener serving a copy of ``examples/mcp-conformance/``.

Runs only where the suite is installed (``examples/mcp-conformance/install-suite.sh``,
which ``.ci/run`` calls; it installs into ``$SCONNECT_CONFORMANCE_DIR``, default
``~/.cache/sconnect-conformance``), else skips saying how to install it.  The suite runs
every server scenario with ``expected-failures.yaml`` as its baseline, so it exits 0
only when every applicable scenario passes and every listed one still fails; the test
also checks, from the suite's own result files, that each scenario we claim passed.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import trio

from tests.mcp.conftest import McpServer

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).parent.parent.parent / "examples" / "mcp-conformance"
# The scenarios a gateway of sandboxed tools and static resources can pass (the rest, and why
# they do not apply, are in expected-failures.yaml).
APPLICABLE = {
    "server-initialize", "ping", "tools-list", "tools-call-simple-text", "tools-call-error",
    "tools-call-image", "tools-call-audio", "tools-call-embedded-resource", "tools-call-mixed-content",
    "json-schema-2020-12", "server-sse-multiple-streams", "resources-list", "resources-read-text",
    "resources-read-binary", "resources-templates-read", "dns-rebinding-protection",
}


def suite_dir() -> Path:
    explicit = os.environ.get("SCONNECT_CONFORMANCE_DIR")
    if explicit:
        return Path(explicit)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "sconnect-conformance"


async def test_the_official_conformance_suite(start_mcp, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    installed = suite_dir()
    node = installed / "node_modules" / ".bin" / "node"
    suite = installed / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
    if not (os.access(node, os.X_OK) and suite.is_file()):
        pytest.skip(f"the MCP conformance suite is not installed in {installed}: "
                    "run examples/mcp-conformance/install-suite.sh (needs npm and the npm registry)")
    config = tmp_path / "config"
    shutil.copytree(EXAMPLE, config)
    server: McpServer = await start_mcp(config, mcp_anonymous_role="conformance")
    results = tmp_path / "results"
    with trio.fail_after(240):
        ran = await trio.run_process(
            [str(node), str(suite), "server", "--url", server.mcp, "--suite", "all",
             "--expected-failures", str(config / "expected-failures.yaml"), "-o", str(results)],
            capture_stdout=True, capture_stderr=True, check=False,
        )
    report = ran.stdout.decode(errors="replace")[-4000:] + ran.stderr.decode(errors="replace")[-2000:]
    assert ran.returncode == 0, report
    passed: set[str] = set()
    for checks in results.glob("server-*/checks.json"):
        scenario = checks.parent.name.removeprefix("server-").rsplit("-", 6)[0]
        outcomes = [check["status"] for check in json.loads(checks.read_text())]
        if outcomes and all(status in ("SUCCESS", "INFO") for status in outcomes) and "SUCCESS" in outcomes:
            passed.add(scenario)
    assert APPLICABLE <= passed, (sorted(APPLICABLE - passed), report)
