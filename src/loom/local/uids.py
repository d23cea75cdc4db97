"""One UID per local pod: the user its sidecars (dataplane and Envoy) run as.

In Kubernetes each pod's token and keys sit in that pod's own volume, so one pod's sidecar
cannot read another's even though all run as UID 5995. On one machine there are no such
walls, so ``loom local`` gives each pod's sidecars a user of their own, taken from a range
(``UidRange``): the pod's directory is ``root:<uid>`` 0750, its login token and its
sidecars' work directories (SDS socket, bootstrap) are that UID's alone (0600/0700), and the
pod's redirect rules exclude that UID's traffic. The one thing all sidecars share is the
group ``SOCKET_GID`` (a supplementary group), which opens the state directory (traverse
only) and the server's unix sockets (0660), and nothing that holds a key or a token.

The UID is recorded in the pod's ``pod.json``; a pod's directory going away (``rm``,
``delete``, a failed ``run``) frees it. ``choose`` is pure: a pod prefers the UID its name
hashes to, so a pod made again under the same name gets the same UID; the first free one
after it otherwise. ``allocated`` reads the records, ``locked`` serialises allocations.
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import json
import os
import pwd
import shutil
import zlib
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

from loom.inject import PROXY_UID
from loom.local.errors import LocalError, state_io

SOCKET_GID = PROXY_UID
"""The sidecars' shared group (5995): the state directory and the server's sockets only."""


@dataclass(frozen=True)
class UidRange:
    """Where the pods' sidecar UIDs come from."""

    first: int = 60000
    """The first UID of the range: above the usual login users (1000-59999 on most
    distributions), below systemd's dynamic users (61184-65519) and ``nobody`` (65534)."""
    count: int = 1000
    """How many UIDs (so how many pods with sidecars at once)."""

    def __post_init__(self) -> None:
        if self.first <= 0 or self.count <= 0 or self.first + self.count > 2**32 - 1:
            raise LocalError(f"sidecar UID range {self.first}+{self.count} is not valid")
        if self.first <= SOCKET_GID < self.first + self.count:
            raise LocalError(f"sidecar UID range {self.first}+{self.count} holds {SOCKET_GID}")


def choose(
    name: str, taken: Collection[int], uids: UidRange, known: Callable[[int], bool]
) -> int:
    """The UID for pod ``name``: the one its name hashes to, else the next free one.

    ``taken`` are the UIDs of the other pods; ``known(uid)`` says whether the machine has a
    user or group with that number already (never handed to a pod)."""
    start = zlib.crc32(name.encode()) % uids.count
    for step in range(uids.count):
        uid = uids.first + (start + step) % uids.count
        if uid not in taken and not known(uid):
            return uid
    raise LocalError(
        f"no free sidecar UID in {uids.first}-{uids.first + uids.count - 1} "
        f"({len(taken)} pods hold one); remove a pod first"
    )


def known_to_system(uid: int) -> bool:
    """Whether a user or a group with this number exists on the machine."""
    for lookup in (pwd.getpwuid, grp.getgrgid):
        try:
            lookup(uid)
        except KeyError:
            continue
        return True
    return False


def allocated(pods_dir: Path, but: str | None = None) -> dict[str, int]:
    """Pod name -> its sidecar UID, from the pods' records (``but`` left out)."""
    out: dict[str, int] = {}
    with state_io(f"cannot list {pods_dir}"):
        dirs = sorted(pods_dir.iterdir()) if pods_dir.is_dir() else []
    for d in dirs:
        if d.name == but:
            continue
        try:
            uid = json.loads((d / "pod.json").read_text()).get("uid")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(uid, int):
            out[d.name] = uid
    return out


def lock_file(state_dir: Path) -> Path:
    return state_dir / "uids.lock"


@contextlib.contextmanager
def locked(state_dir: Path) -> Iterator[None]:
    """Held while a UID is chosen and recorded, so two ``run``s never pick the same one."""
    with state_io(f"cannot lock {state_dir}"):
        fd = os.open(lock_file(state_dir), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def claim(
    pods_dir: Path, name: str, uids: UidRange, sidecars: bool, record: Callable[[int], None]
) -> int:
    """Make pod ``name``'s directory, ``root:<uid>`` 0750 (its sidecars may enter, not read
    its JWTs; no other pod's sidecar may enter), with a UID of its own when it has
    ``sidecars`` (0, root's group, otherwise) that ``record`` writes into the pod's record
    before the lock is let go."""
    pod_dir = pods_dir / name
    with locked(pods_dir.parent):
        with state_io(f"cannot make the directory of pod {name}"):
            pods_dir.mkdir(parents=True, exist_ok=True)
            pod_dir.mkdir(mode=0o700, exist_ok=True)
        try:
            uid = 0
            if sidecars:
                taken = set(allocated(pods_dir, but=name).values())
                uid = choose(name, taken, uids, known_to_system)
            record(uid)
        except BaseException:
            shutil.rmtree(pod_dir, ignore_errors=True)
            raise
    with state_io(f"cannot make the directory of pod {name}"):
        os.chown(pod_dir, 0, uid)
        pod_dir.chmod(0o750)
    return uid
