"""deploy/sconnect.service: the properties an operator relies on must not regress.

The unit is parsed line by line (systemd allows repeated keys, which configparser does
not); `systemd-analyze verify` runs on it when the machine has systemd-analyze.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "sconnect.service"
ENV_EXAMPLE = UNIT.parent / "env.example"
SETTINGS = UNIT.parent / "sconnect.yaml"
VERIFY_SERVICE = UNIT.parent / "sconnect-audit-verify.service"
VERIFY_TIMER = UNIT.parent / "sconnect-audit-verify.timer"
TEMPLATE = UNIT.parent / "sconnect@.service"
# What an instance of the template sets for itself; everything else is sconnect.service's.
PER_INSTANCE = {"Description", "ExecStart", "EnvironmentFile", "StateDirectory"}
DEFAULT_SHUTDOWN_GRACE_S = 10.0  # `sconnect serve --shutdown-grace` default


def parse(path: Path) -> dict[str, dict[str, list[str]]]:
    """{section: {key: [values in order]}}; comments and blank lines skipped."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"line {number} is outside any section: {raw!r}"
        assert not line.endswith("\\"), f"line {number}: keep every option on one line"
        key, sep, value = line.partition("=")
        assert sep, f"line {number} is not key=value: {raw!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def seconds(text: str) -> float:
    """A systemd time span such as `30s`, `1min 30s`, `90` (seconds)."""
    units = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "": 1}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", text):
        total += float(number) * units[unit]
    return total


@pytest.fixture(scope="module")
def service() -> dict[str, list[str]]:
    return parse(UNIT)["Service"]


def one(service: dict[str, list[str]], key: str) -> str:
    values = service.get(key)
    assert values, f"{key}= is missing"
    assert len(values) == 1, f"{key}= is set {len(values)} times"
    return values[0]


def serve_argv(service: dict[str, list[str]]) -> list[str]:
    argv = shlex.split(one(service, "ExecStart"))
    assert argv[0].startswith("/") and argv[0].endswith("/sconnect"), argv[0]
    assert argv[1] == "serve", argv
    return argv


def option(argv: list[str], name: str) -> str | None:
    for index, arg in enumerate(argv):
        if arg == name:
            return argv[index + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def test_exec_start_serves_the_state_directory(service: dict[str, list[str]]) -> None:
    argv = serve_argv(service)
    assert "--dev" not in argv, "--dev creates keys and prints tokens: never in production"
    state_dir = option(argv, "--state-dir")
    state, *others = one(service, "StateDirectory").split()
    assert state_dir == "/var/lib/" + state
    assert others == [state + "-keys"], "the audit key lives beside the state directory, writable to the service"
    assert option(argv, "--config") == "/etc/sconnect"


def test_where_it_listens_comes_from_the_settings_file_only(service: dict[str, list[str]]) -> None:
    """A flag in ExecStart would silently override /etc/sconnect/sconnect.yaml."""
    from engine.server.options import read_server_file

    argv = serve_argv(service)
    for flag in ("--host", "--port", "--health-port", "--health-host", "--tls-cert", "--tls-key", "--limit",
                 "--shutdown-grace", "--server-config"):
        assert option(argv, flag) is None and flag not in argv, f"{flag} belongs in sconnect.yaml"
    settings = read_server_file(SETTINGS)
    assert settings["host"] == "127.0.0.1" and settings["port"] == 8765
    assert settings["health_port"], "the load balancer and Prometheus need /readyz and /metrics"
    assert settings["health_host"] == "127.0.0.1"


def test_open_files_limit_is_raised(service: dict[str, list[str]]) -> None:
    """Every connection is a descriptor; the server derives its limits from this one."""
    limit = one(service, "LimitNOFILE")
    soft, _, hard = limit.partition(":")
    assert int(soft) >= 16384 and int(hard or soft) >= int(soft)


def test_the_audit_verify_timer_sees_what_the_service_sees(service: dict[str, list[str]]) -> None:
    verify = parse(VERIFY_SERVICE)["Service"]
    assert one(verify, "EnvironmentFile") == one(service, "EnvironmentFile"), "the audit key location lives there"
    argv = shlex.split(one(verify, "ExecStart"))
    assert argv[0] == serve_argv(service)[0] and argv[1:3] == ["audit", "verify"]
    assert option(argv, "--state-dir") == option(serve_argv(service), "--state-dir")
    assert one(verify, "Type") == "oneshot"
    timer = parse(VERIFY_TIMER)
    assert one(timer["Timer"], "OnCalendar") and one(timer["Install"], "WantedBy") == "timers.target"


def test_state_directory_mode_lets_the_sandbox_user_traverse_only(service: dict[str, list[str]]) -> None:
    assert one(service, "StateDirectoryMode") == "0711"


def test_reload_sends_sighup_to_the_main_process(service: dict[str, list[str]]) -> None:
    reload = shlex.split(one(service, "ExecReload"))
    assert reload[0].endswith("kill") and "-HUP" in reload and "$MAINPID" in reload


def test_stop_is_graceful_and_outlasts_the_grace_period(service: dict[str, list[str]]) -> None:
    assert service.get("KillSignal", ["SIGTERM"]) == ["SIGTERM"]
    # control-group (the default) would SIGTERM every sandboxed tool along with the server.
    assert one(service, "KillMode") == "mixed"
    from engine.server.options import read_server_file

    grace = seconds(str(read_server_file(SETTINGS).get("shutdown_grace", ""))) or DEFAULT_SHUTDOWN_GRACE_S
    assert seconds(one(service, "TimeoutStopSec")) > grace
    assert one(service, "Restart") == "on-failure"


def test_hardening(service: dict[str, list[str]]) -> None:
    assert one(service, "NoNewPrivileges") == "yes"
    assert one(service, "ProtectSystem") == "strict"
    assert one(service, "PrivateTmp") == "yes"
    assert one(service, "ProtectHome") in {"yes", "read-only", "tmpfs"}
    assert one(service, "SystemCallArchitectures") == "native"
    capabilities = set(one(service, "CapabilityBoundingSet").split())
    assert "CAP_SYS_ADMIN" not in capabilities and not any(cap.startswith("~") for cap in capabilities)


def test_the_sandbox_can_still_start(service: dict[str, list[str]]) -> None:
    """Options that would stop bubblewrap (measured: see the unit's header)."""
    namespaces = set(one(service, "RestrictNamespaces").split())
    assert {"user", "mnt", "pid", "net", "ipc", "uts", "cgroup"} <= namespaces
    families = set(one(service, "RestrictAddressFamilies").split())
    assert {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"} <= families
    assert service.get("PrivateUsers", ["no"]) == ["no"]
    for key in ("ProtectKernelTunables", "ProtectKernelLogs", "ProtectProc", "ProcSubset", "DynamicUser"):
        assert key not in service, f"{key}= breaks the bubblewrap sandbox or its uid 65534"
    # Root (no User=, or User=root) is what lets the sandbox run tools as uid 65534.
    assert service.get("User", ["root"]) == ["root"]
    capabilities = set(one(service, "CapabilityBoundingSet").split())
    assert {"CAP_SETUID", "CAP_SETGID", "CAP_CHOWN", "CAP_KILL"} <= capabilities


def test_secrets_come_from_an_environment_file_not_the_unit(service: dict[str, list[str]]) -> None:
    assert one(service, "EnvironmentFile").lstrip("-") == "/etc/sconnect/env"
    text = UNIT.read_text(encoding="utf-8")
    for line in text.splitlines():
        if not line.lstrip().startswith("#"):
            assert "SCONNECT_JWT_SECRET=" not in line and "Environment=SCONNECT_JWT" not in line


def test_env_example_sets_nothing_by_default() -> None:
    """Every line of the example is a comment: copying it unedited configures no key."""
    lines = [line for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert lines and all(line.lstrip().startswith("#") for line in lines)
    for name in ("SCONNECT_JWT_SECRET_FILE", "SCONNECT_JWKS_FILE", "SCONNECT_JWT_AUDIENCE", "SCONNECT_AUDIT_KEY_FILE"):
        assert f"{name}=" in ENV_EXAMPLE.read_text(encoding="utf-8")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("source", [UNIT, VERIFY_SERVICE, VERIFY_TIMER, TEMPLATE], ids=lambda path: path.name)
def test_systemd_analyze_verify(tmp_path: Path, source: Path) -> None:
    # verify checks that ExecStart's program exists: point it at one on this machine.
    program = shlex.split(one(parse(UNIT)["Service"], "ExecStart"))[0]
    stand_in = shutil.which("sconnect") or sys.executable
    for path in (UNIT, VERIFY_SERVICE, VERIFY_TIMER, TEMPLATE):
        (tmp_path / path.name).write_text(path.read_text(encoding="utf-8").replace(program, stand_in), encoding="utf-8")
    # A template is verified as one of its instances.
    unit = tmp_path / source.name.replace("@.", "@a.")
    if unit.name != source.name:
        (tmp_path / source.name).rename(unit)
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        capture_output=True, text=True, timeout=30, check=False,
    )
    # An unknown key or a value that does not parse is only a warning ("ignoring"): fail on it too.
    complaints = [line for line in (done.stdout + done.stderr).splitlines() if str(unit) in line or source.name in line]
    assert done.returncode == 0 and not complaints, done.stdout + done.stderr


def test_the_instance_template_is_the_service_with_files_of_its_own() -> None:
    unit, template = parse(UNIT), parse(TEMPLATE)
    assert set(template) == set(unit)
    for section in unit:
        same = {key: values for key, values in unit[section].items() if key not in PER_INSTANCE}
        assert {key: values for key, values in template[section].items() if key not in PER_INSTANCE} == same, section
    service = template["Service"]
    argv = serve_argv(service)
    assert option(argv, "--state-dir") == "/var/lib/sconnect-%i"
    assert option(argv, "--server-config") == "/etc/sconnect/instance-%i.yaml"
    assert option(argv, "--config") == option(serve_argv(unit["Service"]), "--config")
    # The state directory and its keys directory (`<state>-keys`, the audit head file) are the instance's own.
    assert service["StateDirectory"] == ["sconnect-%i sconnect-%i-keys"]
    # The shared environment (database, audit key, JWT) first, then the instance's own, optional.
    assert service["EnvironmentFile"] == [*unit["Service"]["EnvironmentFile"], "-/etc/sconnect/env-%i"]
