"""The sandbox's escape, limit and contract tests, run once more against `isolation: pool`.

Each test below is imported unchanged from the module named beside it (they perform
the attack for real and assert the safe outcome); the `backend` fixture is overridden
here, so every one runs against the warm pool. Left out, because the pool differs on
purpose (README, "The warm pool"), and tested for what it does instead:

- test_setsid_grandchild_dies_on_{timeout,normal_return,cancellation}: in the pool
  setsid() itself is refused, so a grandchild cannot leave the call's process group
  (test_pool_isolation.py::test_grandchildren_die_on_timeout_and_on_return);
- test_missing_filter_is_refused_by_default: the pool is refused without the filter
  even with SCONNECT_SANDBOX_ALLOW_WEAK=1 (test_pool_refuses_to_run_weaker below);
- test_writing_past_the_scratch_space_is_stopped (/tmp, /dev/shm): a pool call cannot
  write to /tmp or /dev/shm at all; its TMPDIR, inside its own work directory, is its
  temporary space (test_pool_calls_cannot_write_the_shared_scratch; test_pool_tmp.py);
- test_env_is_exactly_the_spec_env: a pool call's environment is the Spec's plus TMPDIR
  (test_pool_env_is_the_spec_env_and_its_tmpdir).
"""

# ruff: noqa: F401, F811  (imported tests and fixtures)
from __future__ import annotations

from typing import Any

import attrs
import pytest

import sandbox
from tests.sandbox.conftest import (
    PY,
    no_leftovers,
    runner_for,
    shared_dir,
    token,
    token_processes,
    tool,
    wait_until_fixture,
    work_root,
)
from tests.sandbox.test_sandbox_basics import (
    package,
    test_cwd_in_a_writable_path,
    test_cwd_outside_visible_paths_is_refused,
    test_invalid_utf8_output_never_crashes,
    test_json_output_and_arguments_on_stdin,
    test_missing_binary,
    test_non_json_output_is_wrapped,
    test_nonzero_exit_is_error_with_stderr_tail,
    test_plain_text_is_wrapped,
    test_python_exception_is_error_with_last_line,
    test_python_function_with_package,
    test_python_package_parent_is_not_visible,
    test_python_stdlib_function,
    test_work_dir_is_fresh_writable_and_removed,
)
from tests.sandbox.test_sandbox_escapes import (
    setuid_id,
    test_cannot_signal_host_processes,
    test_engine_environment_is_not_visible,
    test_engine_secret_file_is_unreadable,
    test_etc_shadow_is_unreadable,
    test_no_network_means_no_tcp_to_localhost,
    test_setuid_binary_gives_no_privilege,
    test_su_does_not_escalate,
    test_tiocsti_cannot_inject_into_a_host_terminal,
    test_write_through_planted_symlink,
    test_writes_outside_the_work_dir_do_not_reach_the_host,
    victim,
)
from tests.sandbox.test_sandbox_limits import (
    abuse_package,
    pid_dir,
    test_cancellation_of_many_concurrent_calls,
    test_concurrent_calls_all_succeed,
    test_cpu_spin_hits_cpu_limit,
    test_file_size_limit,
    test_fork_bomb_hits_process_limit,
    test_huge_stdin_to_a_tool_that_never_reads,
    test_huge_stdout_is_truncated_with_bounded_memory,
    test_memory_bomb_hits_memory_limit,
    test_python_tool_cpu_spin_is_measured,
    test_python_tool_memory_bomb,
    test_sleep_past_timeout,
    test_term_ignoring_tool_is_killed_after_grace,
)
from tests.security.test_sandbox_identity import (
    drop_dir,
    marked_host_process,
    test_host_command_lines_are_invisible,
    test_nobody_cannot_read_a_running_tool_environment,
    test_setuid_program_cannot_be_planted,
    test_tool_runs_as_a_dedicated_uid,
    test_writable_paths_are_nosuid,
)
from tests.security.test_sandbox_kernel import (
    test_dangerous_syscalls_are_refused,
    test_nested_user_namespace_is_refused,
    test_ordinary_tools_still_work,
    test_setuid_bit_cannot_be_set,
)

pytestmark = pytest.mark.skipif(
    sandbox.detect().pool_problem() is not None, reason=f"no pool here: {sandbox.detect().pool_problem()}"
)


@pytest.fixture
def backend() -> str:
    return "pool"


def test_pool_refuses_to_run_weaker(runner_for: Any) -> None:
    spec = runner_for("pool").spec(argv=("/bin/true",))
    weak = attrs.evolve(sandbox.detect(), seccomp_problem="pyseccomp missing", allow_weak=True)
    with pytest.raises(sandbox.IsolationUnavailable, match="no seccomp filter"):
        sandbox.backend_for(spec, weak)


async def test_pool_calls_cannot_write_the_shared_scratch(runner_for: Any) -> None:
    code = (
        "import json, os\nout = {}\nfor d in ('/tmp', '/dev/shm'):\n"
        "    try:\n        open(os.path.join(d, 'x'), 'w').write('x')\n        out[d] = 'written'\n"
        "    except OSError as exc:\n        out[d] = type(exc).__name__\n"
        "import tempfile\nout['tempfile'] = tempfile.gettempdir() == os.getcwd() + '-tmp'\n"
        "print(json.dumps(out))"
    )
    result = await sandbox.run(runner_for("pool").spec(argv=(*PY, code)), {})
    assert result.output == {"/tmp": "PermissionError", "/dev/shm": "PermissionError", "tempfile": True}, result


async def test_pool_env_is_the_spec_env_and_its_tmpdir(runner_for: Any) -> None:
    tool = runner_for("pool")
    result = await tool.run(argv=("/bin/sh", "-c", "/usr/bin/env; echo CWD=$(pwd)"), env={"GREETING": "hi"})
    assert result.status == "ok", result
    lines = sorted(result.output["text"].split())
    cwd = next(line[4:] for line in lines if line.startswith("CWD="))
    # PWD: set by the shell; TMPDIR: the call's own, beside its work directory
    lines = [line for line in lines if not line.startswith(("PWD=", "CWD="))]
    assert lines == sorted(["GREETING=hi", f"SCONNECT_SANDBOX_TEST={tool.token}", f"TMPDIR={cwd}-tmp"])
