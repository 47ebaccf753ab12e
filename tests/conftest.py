"""Fixtures shared by the whole suite."""

from __future__ import annotations

import atexit
import functools
import gc
import os
import shutil
import ssl
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).parent.parent


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Keep the reason of a skip raised inside an async (Trio) test.

    pytest-trio turns a lone ``Skipped`` leaving ``trio.run`` into a bare ``pytest.skip()``,
    which drops its message: every root-only case would say just "Skipped". The original
    is still the new exception's context; its reason goes back into the report.
    """
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    excinfo = call.excinfo
    if not (report.skipped and excinfo is not None and isinstance(report.longrepr, tuple)):
        return
    context: BaseException | None = excinfo.value.__context__
    while isinstance(context, BaseExceptionGroup) and len(context.exceptions) == 1:
        context = context.exceptions[0]
    reason = getattr(context, "msg", None)
    if context is not None and type(context) is type(excinfo.value) and reason:
        where, line, _ = report.longrepr
        report.longrepr = (where, line, f"Skipped: {reason}")


def pytest_collection_finish(session: pytest.Session) -> None:
    """Take what collection loaded out of the cyclic garbage collector's full passes.

    The engine, its libraries and the test modules live as long as the run; each full
    pass walked them all again (~75 ms, every few tests: ~16 ms a test, measured with
    gc.callbacks). ``sconnect serve`` does the same after its start. What the tests
    create afterwards is collected as before.
    """
    gc.collect()
    gc.freeze()


@functools.cache
def _shipped_files(name: str) -> tuple[str, ...] | None:
    """The files of the checkout's ``name`` directory that the project ships (tracked by
    git), or None outside a git checkout. Asked once per run: what git tracks does not
    change while the tests run, and most tests copy a configuration."""
    try:
        done = subprocess.run(
            ["git", "ls-files", "-z", "--", name], cwd=REPO, capture_output=True, check=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return tuple(path for path in done.stdout.decode().split("\0") if path)


def copy_shipped(name: str, target: Path) -> Path:
    """Copy the shipped example's ``name`` directory (``tools.d``, ``policies``, ...) to
    ``target``: only what the project ships, never what a user added to their checkout
    (a ``tools new`` of theirs must not change what the tests see)."""
    files = _shipped_files(name)
    if files is None:
        shutil.copytree(REPO / name, target, ignore=shutil.ignore_patterns("__pycache__"))
        return target
    target.mkdir(parents=True, exist_ok=True)
    for path in files:
        destination = target / Path(path).relative_to(name)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / path, destination)
    return target


_CONFIG_DIRS = ("agents.d", "tools.d", "resources.d", "policies", "models.d")


def _pristine_example() -> Path:
    """One copy per test run of the example configuration as the project ships it."""
    root = Path(tempfile.mkdtemp(prefix="sconnect-shipped-"))
    os.chmod(root, 0o755)
    for name in _CONFIG_DIRS:
        if (REPO / name).is_dir():
            copy_shipped(name, root / name)
    return root


@functools.cache
def plain_http_tls() -> ssl.SSLContext:
    """The SSL context an httpx client builds by default (the CA bundle loaded), made once
    per run: the tests' clients speak plain HTTP to 127.0.0.1, and a fresh context for
    each client costs ~20 ms. Pass it as ``verify=``; a test of TLS builds its own."""
    import httpx

    return httpx.create_ssl_context()


@functools.cache
def plain_http2_tls() -> ssl.SSLContext:
    """:func:`plain_http_tls` for httpx2, the MCP SDK's HTTP client."""
    import httpx2

    return httpx2.create_ssl_context()


def processes_with(marker: str) -> list[int]:
    """Pids whose command line holds ``marker`` (how tests find a tool's process, or its absence)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


#: The shipped example configuration, copied once (read-only use): tests that need "the
#: shipped config" read this, never the checkout's own directories, which a user may have
#: changed (a `tools new greet` of theirs must not change what the tests see).
SHIPPED_CONFIG = _pristine_example()
atexit.register(shutil.rmtree, SHIPPED_CONFIG, True)


@pytest.fixture
def minimal_config(tmp_path: Path) -> Path:
    """A private, writable copy of the small valid configuration in tests/data/minimal."""
    root = tmp_path / "config"
    shutil.copytree(DATA / "minimal", root)
    return root


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[object]:
    """A PostgreSQL server for the run (tests/pg/cluster.py): ``SCONNECT_TEST_DATABASE_URL``
    or a throwaway cluster started here and stopped at the end; skips with the reason
    when neither is possible."""
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError:
        pytest.skip("psycopg 3 / psycopg_pool not installed (pip install -e '.[postgres]')")
    from tests.pg.cluster import ENV_URL, Cluster, find_bin

    if os.environ.get(ENV_URL):
        yield Cluster(os.environ[ENV_URL])
        return
    bin_dir = find_bin()
    if bin_dir is None:
        pytest.skip(f"no PostgreSQL: set {ENV_URL} or install the server (apt-get install postgresql)")
    cluster = Cluster.start(bin_dir)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(pg_cluster: object) -> Iterator[str]:
    """The URL of a fresh, empty database, dropped after the test."""
    from tests.pg.cluster import Cluster

    assert isinstance(pg_cluster, Cluster)
    url = pg_cluster.create_database()
    try:
        yield url
    finally:
        pg_cluster.drop_database(url)


@pytest.fixture
def shared_env(pg_url: str, tmp_path: Path) -> dict[str, str]:
    """What every instance on one database is given: its URL and the one audit key file
    (the operator copies it to each host; the shared audit chain is signed with it)."""
    key = tmp_path / "shared-keys" / "audit-key"
    key.parent.mkdir(mode=0o700)
    key.write_bytes(os.urandom(32))
    key.chmod(0o400)
    return {"SCONNECT_DATABASE_URL": pg_url, "SCONNECT_AUDIT_KEY_FILE": str(key)}
