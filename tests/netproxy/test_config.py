"""``sandbox.network`` in tool YAML: a list loads, and each mistake in it is reported at
its own line by the loader (what ``sconnect check`` prints)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine.config import load_config
from engine.errors import ConfigError

HEAD = """\
name: x
description: A tool with a network list.
permission_level: 0
command: [/bin/true]
parameters: {type: object}
sandbox:
"""


def write(root: Path, sandbox: str) -> None:
    (root / "tools.d" / "x.yaml").write_text(HEAD + sandbox)


def messages(root: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(root)
    return [str(problem) for problem in caught.value.problems]


def test_a_list_loads_as_written(minimal_config: Path) -> None:
    write(minimal_config, "  network:\n    - api.github.com\n    - '*.example.org:443'\n"
                          "    - {host: intranet.corp, port: 8443, addresses: [10.0.0.0/8]}\n")  # fmt: skip
    network = load_config(minimal_config).tools["x"].sandbox.network
    assert isinstance(network, tuple)
    assert network[:2] == ("api.github.com", "*.example.org:443")
    assert dict(network[2]) == {"host": "intranet.corp", "port": 8443, "addresses": ("10.0.0.0/8",)}


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ("    - example.org\n    - example.org:99999\n",
         "tools.d/x.yaml:9:7: sandbox.network[1]: port '99999' is not a number from 1 to 65535"),
        ("    - ''\n", "tools.d/x.yaml:8:7: sandbox.network[0]: an empty destination (e.g. 'api.github.com', "
                     "'api.github.com:443', '*.example.org')"),
        ("    - api.*.example.org\n",
         "tools.d/x.yaml:8:7: sandbox.network[0]: 'api.*.example.org': '*' is allowed only as the whole first "
         "label, e.g. '*.example.org'"),
        ("    - https://api.github.com/\n",
         "tools.d/x.yaml:8:7: sandbox.network[0]: 'https://api.github.com/' is a URL, not a host: write the host "
         "alone (e.g. 'api.github.com', 'api.github.com:443', '*.example.org')"),
        ("    - {host: lan.corp, addresses: [10.0.0.1/8]}\n",
         "tools.d/x.yaml:8:7: sandbox.network[0]: address '10.0.0.1/8' is not an address or range: 10.0.0.1/8 "
         "has host bits set"),
        ("    - {host: lan.corp}\n", "tools.d/x.yaml:8:7: sandbox.network[0]: missing required key 'addresses'"),
        ("    - {host: lan.corp, addresses: [10.0.0.0/8], via: x}\n",
         "tools.d/x.yaml:8:49: sandbox.network[0].via: unknown key 'via' (expected one of: addresses, host, port)"),
        ("    - 443\n", "tools.d/x.yaml:8:7: sandbox.network[0]: 443 is not of type 'string', 'object'"),
    ],
)  # fmt: skip
def test_a_bad_entry_is_reported_at_its_line(minimal_config: Path, lines: str, expected: str) -> None:
    write(minimal_config, "  network:\n" + lines)
    assert messages(minimal_config) == [expected]


def test_an_empty_list_is_refused(minimal_config: Path) -> None:
    write(minimal_config, "  network: []\n")
    assert messages(minimal_config) == ["tools.d/x.yaml:7:12: sandbox.network: [] should be non-empty"]


@pytest.mark.parametrize("isolation", ["process", "pool"])
def test_a_list_needs_the_namespaces_backend(minimal_config: Path, isolation: str) -> None:
    write(minimal_config, f"  isolation: {isolation}\n  network: [example.org]\n")
    assert messages(minimal_config) == [
        f"tools.d/x.yaml:8:12: sandbox.network: a list of destinations needs isolation: namespaces (not "
        f"{isolation}): only a bubblewrap sandbox gives the tool a network namespace whose only way out is the proxy"
    ]


def test_sconnect_check_prints_the_located_error(minimal_config: Path) -> None:
    write(minimal_config, "  network: [example.org, 'example.org:http']\n")
    done = subprocess.run(
        [sys.executable, "-m", "engine", "check", "--config", str(minimal_config)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0
    assert "tools.d/x.yaml:7:26: sandbox.network[1]: port 'http' is not a number from 1 to 65535" in done.stderr


def test_an_mcp_server_file_cannot_have_a_list_yet(minimal_config: Path) -> None:
    (minimal_config / "tools.d" / "up.yaml").write_text(
        "name: up\ndescription: An MCP server.\nmcp_server:\n  command: [/bin/cat]\n  tools:\n"
        "    echo: {permission_level: 0}\nsandbox:\n  network: [example.org]\n"
    )
    assert (
        "tools.d/up.yaml:8:12: sandbox.network: a list of destinations is not supported for mcp_server files yet: "
        "use true or false"
    ) in messages(minimal_config)
