"""A pool call's private temporary directory (its TMPDIR), attacked from later calls and
from another user's calls.

Calls of one pool share a sandbox and its /tmp, so each call gets its own TMPDIR beside
its own fresh work directory (Landlock: only that call can reach it; gone with it):

- test_consecutive_calls_see_nothing_of_each_other: a Python call writes a secret
  through `tempfile`; the next call of the same pool finds its own TMPDIR empty and
  different, cannot open the first call's file by its path nor list the first call's
  TMPDIR, and still cannot write the pool's /tmp; an exec'd program (`mktemp`) gets a
  file in its own TMPDIR too.
- test_another_users_concurrent_call_cannot_reach_my_tmpdir: through
  `engine.toolrun.run_tool` (per-subject workspaces, so a pool sandbox per subject),
  alice's call keeps a secret in its TMPDIR and publishes the path; bob's call, running
  at the same time, tries to read it, list its directory and plant a file in it; every
  attempt fails and alice reads her secret back untouched.
- test_a_tools_own_tmpdir_wins: a tool that declares TMPDIR in its environment keeps it.
"""

# ruff: noqa: F811  (pytest fixtures imported from the sandbox conftest are parameters here)
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import trio

import sandbox
from engine.config.model import SandboxNeeds, Tool
from engine.toolrun import run_tool
from tests.sandbox.conftest import (  # noqa: F401  (fixtures)
    PY,
    give_to_sandbox,
    no_leftovers,
    runner_for,
    shared_dir,
    token,
    work_root,
)

pytestmark = pytest.mark.skipif(
    sandbox.detect().pool_problem() is not None, reason=f"no pool here: {sandbox.detect().pool_problem()}"
)

PEEK = r"""
import json, os, sys, tempfile
args = json.load(sys.stdin)
out = {"tmpdir": os.environ.get("TMPDIR"), "gettempdir": tempfile.gettempdir(),
       "listing": sorted(os.listdir(os.environ["TMPDIR"]))}
def attempt(name, fn):
    try:
        out[name] = "ok:" + repr(fn())[:60]
    except OSError as exc:
        out[name] = type(exc).__name__
if args.get("previous"):
    attempt("read_previous", lambda: open(args["previous"]["file"]).read())
    attempt("list_previous", lambda: os.listdir(args["previous"]["tmpdir"]))
attempt("write_pool_tmp", lambda: open("/tmp/x", "w").write("x"))
fd, path = tempfile.mkstemp()
os.write(fd, b"call-secret")
os.close(fd)
out["file"] = path
print(json.dumps(out))
"""


async def test_consecutive_calls_see_nothing_of_each_other(runner_for: Any) -> None:
    tool = runner_for("pool")
    spec = tool.spec(argv=(*PY, PEEK))
    async with sandbox.open_pools():
        first = await sandbox.run(spec, {})
        second = await sandbox.run(spec, {"previous": first.output})
        made = await sandbox.run(tool.spec(argv=("/bin/sh", "-c", 'f=$(mktemp) && echo hi > "$f" && echo "$f"')), {})
    assert first.status == second.status == "ok", (first, second)
    one, two = first.output, second.output
    assert one["tmpdir"] != two["tmpdir"]
    for seen in (one, two):
        assert seen["listing"] == []
        assert seen["gettempdir"] == seen["tmpdir"]
        assert seen["file"].startswith(seen["tmpdir"] + "/")
        assert seen["write_pool_tmp"] == "PermissionError"
    assert two["read_previous"] in ("FileNotFoundError", "PermissionError"), two
    assert two["list_previous"] in ("FileNotFoundError", "PermissionError"), two
    assert not os.path.exists(one["file"]) and not os.path.exists(two["file"])
    assert made.status == "ok", made
    assert made.output["text"].strip().startswith(tool.work_root + "/")


ALICE_AND_BOB = r"""
import json, os, sys, tempfile, time
args = json.load(sys.stdin)
meet = args["meet"]
def wait_for(path):
    deadline = time.monotonic() + 30
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise SystemExit("the other call never came")
        time.sleep(0.005)
if args["role"] == "alice":
    fd, path = tempfile.mkstemp(dir=os.environ["TMPDIR"])
    os.write(fd, b"alice-secret")
    os.close(fd)
    with open(os.path.join(meet, "info.tmp"), "w") as handle:
        json.dump({"file": path}, handle)
    os.rename(os.path.join(meet, "info.tmp"), os.path.join(meet, "info.json"))
    wait_for(os.path.join(meet, "done"))
    print(json.dumps({"secret": open(path).read(), "listing": sorted(os.listdir(os.path.dirname(path)))}))
else:
    wait_for(os.path.join(meet, "info.json"))
    path = json.load(open(os.path.join(meet, "info.json")))["file"]
    out = {"tmpdir": os.environ["TMPDIR"], "listing": sorted(os.listdir(os.environ["TMPDIR"]))}
    def attempt(name, fn):
        try:
            out[name] = "ok:" + repr(fn())[:60]
        except OSError as exc:
            out[name] = type(exc).__name__
    attempt("read", lambda: open(path).read())
    attempt("list", lambda: os.listdir(os.path.dirname(path)))
    attempt("plant", lambda: open(os.path.join(os.path.dirname(path), "planted"), "w").write("x"))
    open(os.path.join(meet, "done"), "w").close()
    print(json.dumps(out))
"""


async def test_another_users_concurrent_call_cannot_reach_my_tmpdir(shared_dir: str) -> None:
    meet = os.path.join(shared_dir, "meet")
    os.mkdir(meet)
    os.chmod(meet, 0o777)
    state = Path(shared_dir) / "state"
    state.mkdir(mode=0o711)
    (state / "work").mkdir(mode=0o711)
    tool = Tool(
        name="peek", description="peeks", parameters={"type": "object"}, permission_level=0,
        command=(*PY, ALICE_AND_BOB),
        sandbox=SandboxNeeds(isolation="pool", workspace="read", writable_paths=(meet,)),
    )  # fmt: skip
    results: dict[str, sandbox.Result] = {}

    async def call(subject: str) -> None:
        results[subject] = await run_tool(
            tool, {"role": subject, "meet": meet}, workspace=state / "workspace",
            work_root=state / "work", subject=subject,
        )  # fmt: skip

    with trio.fail_after(120):
        async with sandbox.open_pools(), trio.open_nursery() as nursery:
            nursery.start_soon(call, "alice")
            nursery.start_soon(call, "bob")
    alice, bob = results["alice"], results["bob"]
    assert alice.status == "ok" and bob.status == "ok", (alice, bob)
    assert alice.output["secret"] == "alice-secret"
    assert len(alice.output["listing"]) == 1  # nothing planted
    assert bob.output["listing"] == []
    for name in ("read", "list", "plant"):
        assert bob.output[name] in ("FileNotFoundError", "PermissionError"), bob.output


async def test_a_tools_own_tmpdir_wins(runner_for: Any, shared_dir: str) -> None:
    own = os.path.join(shared_dir, "own-tmp")
    os.mkdir(own, 0o700)
    give_to_sandbox(own)
    code = "import json, os, tempfile; print(json.dumps([os.environ['TMPDIR'], tempfile.gettempdir()]))"
    spec = runner_for("pool").spec(argv=(*PY, code), env={"TMPDIR": own}, writable_paths=(own,))
    result = await sandbox.run(spec, {})
    assert result.status == "ok" and result.output == [own, own], result
