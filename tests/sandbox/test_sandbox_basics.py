"""Happy paths and the tool contract, on both backends."""

from __future__ import annotations

import json
import os
import textwrap
from typing import Any

import attrs
import pytest

import sandbox
from tests.sandbox.conftest import TOOL_UID, give_to_sandbox


async def test_json_output_and_arguments_on_stdin(tool: Any) -> None:
    result = await tool.run({"n": 41}, argv=("/bin/sh", "-c", "cat"))
    assert result.status == "ok", result
    assert result.output == {"n": 41}
    assert result.exit_code == 0 and result.signal is None
    assert result.backend == tool.isolation
    assert result.wall_time_s > 0


async def test_plain_text_is_wrapped(tool: Any) -> None:
    result = await tool.run(argv=("/bin/echo", "hello world"))
    assert result.status == "ok"
    assert result.output == {"text": "hello world\n"}


async def test_non_json_output_is_wrapped(tool: Any) -> None:
    result = await tool.run(argv=("/bin/sh", "-c", "echo '{not json'"))
    assert result.status == "ok"
    assert result.output == {"text": "{not json\n"}


async def test_invalid_utf8_output_never_crashes(tool: Any) -> None:
    result = await tool.run(argv=("/bin/sh", "-c", r"printf 'a\377\376b'; printf '\377x' >&2"))
    assert result.status == "ok"
    assert result.output == {"text": "a\ufffd\ufffdb"}
    assert result.stderr_tail == "\ufffdx"


async def test_nonzero_exit_is_error_with_stderr_tail(tool: Any) -> None:
    result = await tool.run(
        argv=("/bin/sh", "-c", "head -c 20000 /dev/zero | tr '\\0' a >&2; echo >&2; echo boom >&2; exit 3"),
        max_stderr_bytes=100,
    )
    assert result.status == "error"
    assert result.exit_code == 3
    assert result.stderr_tail.endswith("boom\n") and len(result.stderr_tail) == 100
    assert "exited with code 3: boom" in result.message


async def test_missing_binary(tool: Any) -> None:
    result = await tool.run(argv=("/nope",))
    assert result.status == "error"
    assert result.message == "binary not found: /nope"


async def test_env_is_exactly_the_spec_env(tool: Any) -> None:
    result = await tool.run(argv=("/usr/bin/env",), env={"GREETING": "hi"})
    assert result.status == "ok"
    lines = sorted(result.output["text"].split())
    # bubblewrap itself sets PWD after --chdir; nothing else may appear.
    lines = [line for line in lines if not line.startswith("PWD=") or tool.isolation == "process"]
    assert lines == sorted(["GREETING=hi", f"SCONNECT_SANDBOX_TEST={tool.token}"])


async def test_work_dir_is_fresh_writable_and_removed(tool: Any, work_root: str) -> None:
    code = "import os,json; open('f','w').write('x'); print(json.dumps(os.getcwd()))"
    first = await tool.py(code)
    second = await tool.py(code)
    assert first.status == second.status == "ok"
    assert first.output != second.output
    assert first.output.startswith(work_root + "/call-")
    assert not os.path.exists(first.output) and not os.path.exists(second.output)


@pytest.fixture
def package(shared_dir: str) -> str:
    root = os.path.join(shared_dir, "pkgs", "demo_tools")
    os.makedirs(root)
    os.chmod(os.path.dirname(root), 0o755)
    with open(os.path.join(root, "__init__.py"), "w") as handle:
        handle.write("")
    with open(os.path.join(root, "greet.py"), "w") as handle:
        handle.write(
            textwrap.dedent(
                """
                import os

                def hello(name, times=1):
                    return {"greeting": " ".join(["hello " + name] * times), "uid": os.getuid()}

                def fail(**kwargs):
                    raise ValueError("no such user: " + kwargs.get("name", "?"))
                """
            )
        )
    # The parent of the package holds an unrelated secret: it must not become visible.
    with open(os.path.join(shared_dir, "pkgs", "secret.txt"), "w") as handle:
        handle.write("s3cret")
    return root


async def test_python_function_with_package(tool: Any, package: str) -> None:
    result = await tool.run(
        {"name": "ada", "times": 2}, python="demo_tools.greet:hello", python_packages=(package,)
    )
    assert result.status == "ok", result
    assert result.output["greeting"] == "hello ada hello ada"
    assert result.output["uid"] == TOOL_UID
    assert result.peak_memory_bytes > 1_000_000


async def test_python_package_parent_is_not_visible(tool: Any, package: str) -> None:
    # The function runs and can import its package, but the package's siblings are absent.
    helper = os.path.join(package, "peek.py")
    with open(helper, "w") as handle:
        handle.write(
            "import os\n"
            "def peek(path):\n"
            "    try:\n"
            "        return open(path).read()\n"
            "    except OSError as exc:\n"
            "        return type(exc).__name__\n"
        )
    secret = os.path.join(os.path.dirname(package), "secret.txt")
    result = await tool.run(
        {"path": secret}, python="demo_tools.peek:peek", python_packages=(package,)
    )
    assert result.status == "ok", result
    assert result.output in ("FileNotFoundError", "PermissionError")


async def test_python_exception_is_error_with_last_line(tool: Any, package: str) -> None:
    result = await tool.run({"name": "bob"}, python="demo_tools.greet:fail", python_packages=(package,))
    assert result.status == "error"
    assert result.exit_code == 1
    assert result.stderr_tail.strip().splitlines()[-1] == "ValueError: no such user: bob"


async def test_python_stdlib_function(tool: Any) -> None:
    result = await tool.run({"obj": {"a": [1, 2]}, "sort_keys": True}, python="json:dumps")
    assert result.status == "ok"
    assert json.loads(result.output) == {"a": [1, 2]}


def test_spec_needs_exactly_one_program() -> None:
    with pytest.raises(sandbox.SpecError):
        sandbox.Spec()
    with pytest.raises(sandbox.SpecError):
        sandbox.Spec(argv=("/bin/true",), python="json:dumps")
    with pytest.raises(sandbox.SpecError):
        sandbox.Spec(python="not a target")
    with pytest.raises(sandbox.SpecError):
        sandbox.Spec(argv=("/bin/true",), timeout_s=0)
    assert issubclass(sandbox.SpecError, sandbox.SandboxError)


async def test_cwd_outside_visible_paths_is_refused(tool: Any) -> None:
    with pytest.raises(sandbox.SpecError):
        await tool.run(argv=("/bin/true",), cwd="/etc")


async def test_cwd_in_a_writable_path(tool: Any, shared_dir: str) -> None:
    shared = os.path.join(shared_dir, "workspace")
    os.mkdir(shared)
    give_to_sandbox(shared)
    result = await tool.run(
        argv=("/bin/sh", "-c", "pwd; echo made > out.txt"), writable_paths=(shared,), cwd=shared
    )
    assert result.status == "ok", result
    assert result.output == {"text": shared + "\n"}
    assert open(os.path.join(shared, "out.txt")).read() == "made\n"


def test_detect_reports_this_host() -> None:
    caps = sandbox.detect()
    assert caps.bwrap == "/usr/bin/bwrap"
    assert caps.user_namespaces
    assert caps.default_backend == "namespaces"
    assert "namespaces" in caps.summary
    assert sandbox.detect() is caps  # probed once


def test_namespaces_without_bwrap_is_refused_not_downgraded() -> None:
    caps = attrs.evolve(sandbox.detect(), bwrap=None)
    spec = sandbox.Spec(argv=("/bin/true",))
    with pytest.raises(sandbox.IsolationUnavailable, match="bubblewrap"):
        sandbox.backend_for(spec, caps)
    process = sandbox.backend_for(attrs.evolve(spec, isolation="process"), caps)
    assert process.name == "process"


def test_namespaces_without_user_namespaces_is_refused() -> None:
    caps = attrs.evolve(sandbox.detect(), user_namespaces=False)
    with pytest.raises(sandbox.IsolationUnavailable, match="user namespaces"):
        sandbox.backend_for(sandbox.Spec(argv=("/bin/true",)), caps)


async def test_explicit_backend_argument(ns_tool: Any) -> None:
    spec = ns_tool.spec(argv=("/bin/echo", "x"))
    result = await sandbox.run(spec, {}, backend=sandbox.ProcessBackend())
    assert result.status == "ok" and result.backend == "process"
