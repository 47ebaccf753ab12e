"""Each ``sconnect policy`` command on the shipped policy and on tests/data/flawed-policy.

A few run as real subprocesses (exit codes as a shell sees them); the rest call
``main()`` in-process to keep the suite quick.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.cli.main import main

from .conftest import FLAWED, SHIPPED

CASES = SHIPPED / "policies" / "tests" / "default.yaml"


def sconnect(*args: str, cwd: Path = SHIPPED) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine", "policy", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=30)


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["policy", *args])
    out, err = capsys.readouterr()
    return code, out, err


# --- subprocesses: exit codes -------------------------------------------------------


def test_can_i_exit_codes_as_a_shell_sees_them():
    allowed = sconnect("can-i", "--role", "user", "--tool", "shell", "--config", str(SHIPPED))
    assert (allowed.returncode, allowed.stdout) == (0, "yes, with an admin's approval\n")
    denied = sconnect("can-i", "--role", "admin", "--tool", "send_payment", "--config", str(SHIPPED))
    assert denied.returncode == 1
    assert denied.stdout.startswith("no: send_payment is level 3 (system restricted)")
    unknown = sconnect("can-i", "--role", "user", "--tool", "nope", "--config", str(SHIPPED))
    assert unknown.returncode == 2 and "unknown tool 'nope'" in unknown.stderr


def test_lint_exit_codes_as_a_shell_sees_them():
    shipped = sconnect("lint", "--config", str(SHIPPED))
    assert shipped.returncode == 0, shipped.stdout
    assert shipped.stdout.endswith("0 errors, 1 warning\n")
    flawed = sconnect("lint", "--config", str(FLAWED))
    assert flawed.returncode == 1
    assert "policies/flawed.yaml:37: error: rule admins-pay: grants level-3 tool pay to role admin" in flawed.stdout


def test_shipped_cases_pass_and_cover_every_rule_as_a_shell_sees_it():
    result = sconnect("test", str(CASES), "--config", str(SHIPPED))
    assert result.returncode == 0, result.stdout
    assert result.stdout == "17/17 cases passed\ncoverage: every rule exercised\n"


def test_bad_args_json_is_a_usage_error():
    result = sconnect("explain", "--role", "user", "--tool", "shell", "--args", "{nope", "--config", str(SHIPPED))
    assert result.returncode == 2 and "--args is not valid JSON" in result.stderr


# --- explain ----------------------------------------------------------------------


def test_explain_lists_every_rule_with_why_not(capsys):
    code, out, _ = run(capsys, "explain", "--role", "user", "--sub", "alice", "--tool", "shell",
                       "--args", '{"command": "ls"}', "--config", str(SHIPPED))
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "request:  alice (roles user) to call shell (level 2)"
    assert "decision: require_approval (approver: admin)" in lines
    assert "reason:   allowed by rule tools-up-to-level-2 (policies/default.yaml:13); " \
           "level 2 requires an admin's approval" in lines
    assert any(line.startswith("  MATCH tools-up-to-level-2") and "policies/default.yaml:13" in line for line in lines)
    assert any(line.startswith("  no    read-example-resources") and
               "action: actions resource.read do not include tool.call" in line for line in lines)


def test_explain_json_names_the_failing_aspect(capsys):
    code, out, _ = run(capsys, "explain", "--role", "user", "--tool", "calc", "--args", '{"expression": "1"}',
                       "--config", str(FLAWED), "--json")
    data = json.loads(out)
    assert code == 0 and data["decision"]["effect"] == "allow"
    by_id = {rule["id"]: rule for rule in data["considered"]}
    assert by_id["users-low-levels"]["matched"] and by_id["users-calc"]["matched"]
    assert by_id["admins-pay"]["aspect"] == "subject"
    assert by_id["shell-needs-admin"]["aspect"] == "target"
    assert by_id["docs-by-admins"]["aspect"] == "subject"
    assert data["decision"]["policy_revision"].startswith("sha256:")


def test_explain_a_resource_read(capsys):
    code, out, _ = run(capsys, "explain", "--role", "admin", "--resource", "file://docs/a.txt",
                       "--config", str(FLAWED), "--json")
    assert code == 0 and json.loads(out)["decision"]["deciding_rule"] == "docs-by-admins"


# --- who-can / can-i -----------------------------------------------------------------


def test_who_can(capsys):
    code, out, _ = run(capsys, "who-can", "--tool", "shell", "--config", str(SHIPPED))
    assert code == 0
    assert out.splitlines() == [
        "role admin: with an admin's approval  [tools-up-to-level-2 (policies/default.yaml:13)]",
        "role user: with an admin's approval  [tools-up-to-level-2 (policies/default.yaml:13)]",
    ]
    code, out, _ = run(capsys, "who-can", "--tool", "pay", "--config", str(FLAWED), "--json")
    assert [(a["subject"], a["label"]) for a in json.loads(out)["allowed"]] == [("admin", "admin")]
    code, out, _ = run(capsys, "who-can", "--tool", "send_payment", "--config", str(SHIPPED))
    assert out == "nobody may call send_payment\n"


def test_can_i_with_a_sub_and_arguments(capsys):
    assert run(capsys, "can-i", "--sub", "alice", "--tool", "pay", "--config", str(FLAWED))[0] == 1
    code, out, _ = run(capsys, "can-i", "--role", "user", "--tool", "fetch", "--config", str(FLAWED), "--json")
    assert code == 1 and json.loads(out)["deciding_rule"] == "no-fetch"


# --- matrix ------------------------------------------------------------------------


def test_matrix_shipped(capsys):
    code, out, _ = run(capsys, "matrix", "--config", str(SHIPPED))
    rows = {line.split()[0]: line.split()[-2:] for line in out.splitlines()[1:-1]}
    assert code == 0 and out.splitlines()[0].split() == ["tool", "/", "resource", "admin", "user"]
    assert rows["calculator"] == ["allow", "allow"]
    assert rows["http_get"] == ["user", "user"]
    assert rows["shell"] == ["admin", "admin"]
    assert rows["send_payment"] == ["deny", "deny"]
    assert rows["db://users/**"] == ["allow", "allow"]
    assert rows["file://local/**"] == ["allow*", "allow*"]  # only documents/**


def test_matrix_json_flawed(capsys):
    code, out, _ = run(capsys, "matrix", "--config", str(FLAWED), "--json")
    data = json.loads(out)
    assert data["subjects"] == ["admin", "auditor", "user", "sub:alice"]
    cells = {t: {s: c["label"] for s, c in row["cells"].items()} for t, row in data["rows"].items()}
    assert cells["pay"] == {"admin": "admin", "auditor": "deny", "user": "deny", "sub:alice": "deny"}
    assert cells["fetch"]["user"] == "deny" and cells["calc"]["user"] == "allow"
    assert cells["file://docs/**"]["admin"] == "allow"


# --- lint ----------------------------------------------------------------------------


def test_lint_flawed_findings(capsys):
    code, out, _ = run(capsys, "lint", "--config", str(FLAWED), "--json")
    data = json.loads(out)
    errors = {(f["kind"], f["rule"]) for f in data["errors"]}
    warnings = {(f["kind"], f["rule"] or f["message"].split(":")[0]) for f in data["warnings"]}
    assert code == 1 and not data["ok"]
    assert errors == {("level-3-broad", "admins-pay"), ("never-matches", "pay-at-level-0")}
    assert ("shadowed", "users-calc") in warnings
    assert ("overridden", "users-fetch") in warnings
    assert ("uncovered-tool", "tool wipe") in warnings
    assert ("level-3-unreachable", "alice-pay-star") in warnings
    assert ("unused-role", "role auditor is declared but no rule names it") in warnings
    # The deny after the allow it overrides is not itself shadowed.
    assert not any(rule == "no-fetch" for _, rule in warnings)
    assert [f["source"] for f in data["errors"]] == ["policies/flawed.yaml:37", "policies/flawed.yaml:43"]


def test_lint_reports_unknown_roles_and_tools_as_errors(capsys, tmp_path):
    root = tmp_path / "cfg"
    shutil.copytree(FLAWED, root)
    text = (root / "policies" / "flawed.yaml").read_text()
    text = text.replace("targets: {tools: [calc]}", "targets: {tools: [calculator]}").replace(
        "subjects: {roles: [user]}\n    targets: {levels", "subjects: {roles: [users]}\n    targets: {levels")
    (root / "policies" / "flawed.yaml").write_text(text)
    code, out, _ = run(capsys, "lint", "--config", str(root))
    assert code == 1
    assert "policies/flawed.yaml:15: error: rules[0].subjects.roles[0]: unknown role 'users'" in out
    assert "policies/flawed.yaml:26: error: rules[2].targets.tools[0]: unknown tool 'calculator'" in out


# --- test ----------------------------------------------------------------------------


FAILING = """\
name: flawed-cases
description: One passing case, two failing ones.
cases:
  - name: users compute
    roles: [user]
    tool: calc
    arguments: {expression: "1"}
    effect: allow
    rules: [users-low-levels, users-calc]
  - name: users fetch (wrong, no-fetch denies)
    roles: [user]
    tool: fetch
    effect: require_approval
    approver: user
  - name: admins pay without approval (wrong)
    roles: [admin]
    tool: pay
    arguments: {amount: 3}
    effect: allow
    deciding_rule: admins-pay
"""


def test_failing_cases_show_the_actual_decision_and_coverage(capsys, tmp_path):
    cases = tmp_path / "cases.yaml"
    cases.write_text(FAILING)
    code, out, _ = run(capsys, "test", str(cases), "--config", str(FLAWED))
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == f"FAIL {cases}:10: users fetch (wrong, no-fetch denies)"
    assert lines[1:3] == ["    effect: expected require_approval, got deny", "    approver: expected user, got none"]
    assert lines[3].startswith("    actual: deny (approver none), rules [users-low-levels, users-fetch, no-fetch]: "
                               "denied by rule no-fetch")
    assert lines[4] == f"FAIL {cases}:15: admins pay without approval (wrong)"
    assert lines[5] == "    effect: expected allow, got require_approval"
    assert "1/3 cases passed, 2 failed" in lines
    uncovered = lines[lines.index("rules no case exercised:") + 1:]
    assert uncovered == ["  shell-needs-admin (policies/flawed.yaml:17)", "  pay-at-level-0 (policies/flawed.yaml:43)",
                         "  alice-pay-star (policies/flawed.yaml:48)", "  docs-by-admins (policies/flawed.yaml:52)"]


def test_cases_file_errors_have_file_and_line(capsys, tmp_path):
    cases = tmp_path / "cases.yaml"
    cases.write_text(FAILING.replace("    effect: allow\n    rules", "    effect: allowed\n    rules")
                     .replace("tool: fetch", "tool: fetchit"))
    code, _, err = run(capsys, "test", str(cases), "--config", str(FLAWED))
    assert code == 2
    assert f"{cases}:8:13: cases[0].effect: 'allowed' is not one of 'allow', 'deny', 'require_approval'" in err
    cases.write_text(FAILING.replace("tool: fetch", "tool: fetchit").replace("deciding_rule: admins-pay",
                                                                             "deciding_rule: nope"))
    code, _, err = run(capsys, "test", str(cases), "--config", str(FLAWED))
    assert code == 2
    assert f"{cases}:12:11: cases[1].tool: unknown tool 'fetchit'" in err
    assert f"{cases}:20:20: cases[2].deciding_rule: no policy rule has id 'nope'" in err
    cases.write_text(FAILING.replace("    tool: calc\n", "    tool: calc\n    resource: file://docs/a\n"))
    code, _, err = run(capsys, "test", str(cases), "--config", str(FLAWED))
    assert code == 2 and "a case names exactly one of 'tool', 'resource' and 'agent'" in err


def test_shipped_cases_json(capsys):
    code, out, _ = run(capsys, "test", str(CASES), "--config", str(SHIPPED), "--json")
    data = json.loads(out)
    assert (code, data["passed"], data["failed"], data["uncovered_rules"]) == (0, 17, 0, [])


# --- diff ----------------------------------------------------------------------------


def test_diff_identical_is_no_changes(capsys):
    code, out, _ = run(capsys, "diff", str(SHIPPED), str(SHIPPED))
    assert (code, out) == (0, "no changes\n")


def test_diff_lists_changed_answers_using_the_other_sides_tools(capsys, tmp_path):
    new = tmp_path / "new"
    (new / "policies").mkdir(parents=True)  # no tools.d/: the old side's are used
    text = (SHIPPED / "policies" / "default.yaml").read_text()
    text = text.replace("targets: {levels: [0, 1, 2]}", "targets: {levels: [0, 1]}") + (
        "  - id: alice-pays\n    effect: require_approval\n    approver: admin\n"
        "    subjects: {subs: [alice]}\n    targets: {tools: [send_payment]}\n")
    (new / "policies" / "default.yaml").write_text(text)
    code, out, _ = run(capsys, "diff", str(SHIPPED), str(new), "--json")
    changes = {(c["target"], c["subject"]): (c["old"] and c["old"]["label"], c["new"]["label"])
               for c in json.loads(out)["changes"]}
    assert code == 0
    assert changes == {
        ("send_payment", "sub:alice"): ("deny", "admin"),
        ("shell", "admin"): ("admin", "deny"), ("shell", "user"): ("admin", "deny"),
        ("write_file", "admin"): ("admin", "deny"), ("write_file", "user"): ("admin", "deny"),
    }
    code, out, _ = run(capsys, "diff", str(SHIPPED), str(new))
    assert "send_payment                 sub:alice      deny -> admin" in out.splitlines()


def test_diff_without_policies_is_a_usage_error(capsys, tmp_path):
    code, _, err = run(capsys, "diff", str(SHIPPED), str(tmp_path))
    assert code == 2 and "no policies/ directory" in err


@pytest.mark.parametrize("command", ["explain", "can-i"])
def test_explain_and_can_i_need_a_target(command):
    with pytest.raises(SystemExit) as exited:
        main(["policy", command, "--role", "user"])
    assert exited.value.code == 2


def test_an_undeclared_role_is_named_with_a_suggestion(capsys):
    code, out, err = run(capsys, "can-i", "--role", "admn", "--tool", "calculator", "--config", str(SHIPPED))
    assert code == 1 and out.startswith("no: ")
    assert err == "note: no role named 'admn' (did you mean 'admin'? known: admin, user): it grants nothing\n"
    code, _, err = run(capsys, "explain", "--role", "wizard", "--tool", "calculator", "--config", str(SHIPPED))
    assert "note: no role named 'wizard' (known: admin, user): it grants nothing" in err
    code, _, err = run(capsys, "can-i", "--role", "admin", "--tool", "calculator", "--config", str(SHIPPED))
    assert code == 0 and err == ""
