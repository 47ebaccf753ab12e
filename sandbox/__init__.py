"""Subprocess isolation for tools: `await run(spec, arguments) -> Result`, and
`open_session(spec)` for a long-lived sandboxed program spoken to over stdin/stdout.

Three backends: "namespaces" (bubblewrap, one fresh sandbox per call), "process" (a
supervised child with rlimits, uid drop, no_new_privs and Landlock) and "pool" (one warm
bubblewrap sandbox per tool profile whose pre-forked workers each restrict themselves
before taking one call; pools live in `open_pools()`). `detect()` reports
what the host offers; `ensure_volume()` mounts a fixed-size filesystem on a workspace
(a hard disk bound, where the host allows mounts); `backend_for()` refuses, with `IsolationUnavailable`, to run a
namespaces tool weaker than declared. No dependency on the engine.
"""

from ._call import Go as Go
from ._detect import Capabilities as Capabilities
from ._detect import detect as detect
from ._errors import IsolationUnavailable as IsolationUnavailable
from ._errors import SandboxError as SandboxError
from ._errors import SpawnError as SpawnError
from ._errors import SpecError as SpecError
from ._namespaces import NamespacesBackend as NamespacesBackend
from ._pool import PoolBackend as PoolBackend
from ._pool import PoolSet as PoolSet
from ._pool import open_pools as open_pools
from ._process_backend import ProcessBackend as ProcessBackend
from ._result import Result as Result
from ._run import Backend as Backend
from ._run import backend_for as backend_for
from ._run import run as run
from ._session import Session as Session
from ._session import open_session as open_session
from ._spec import Spec as Spec
from ._volume import VolumeError as VolumeError
from ._volume import ensure_volume as ensure_volume
from ._volume import unmount_volume as unmount_volume
from ._volume import volume_mounted as volume_mounted
from ._volume import volume_problem as volume_problem
from ._workdir import SANDBOX_GID as SANDBOX_GID
from ._workdir import SANDBOX_UID as SANDBOX_UID
from ._workdir import first_untraversable as first_untraversable
from ._workdir import sandbox_user as sandbox_user
