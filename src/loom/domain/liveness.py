"""Whether a dataplane is still there, and what its checks say once it is not (its serfHealth).

A check run by a dataplane (``checkstate.check_runner``) is only as fresh as that dataplane:
killed, or on a lost node, it reports nothing more, and the check would keep its last status
forever. So every dataplane sends a heartbeat at a fixed interval (a third of the server's
deadline) carrying the state of every check it runs, and the server keeps, in memory, when it
last heard from each runner (``Heartbeats``). A runner silent for longer than the deadline is
gone: its checks that are not critical already turn critical, with an Output saying why
(``gone_writes``). The next heartbeat brings back what the dataplane sees (``restore_writes``):
as each heartbeat carries the full state, not only changes, the server's overwrite never
sticks, and a report lost on the way is mended one interval later.

Liveness is the dataplane agent's, not Envoy's: an Envoy restarted by its dataplane (no xDS
stream for a moment) changes nothing here. The server's own start counts as everyone's last
report (and a proxy's registration, for one registered later), so a server restart gives
every dataplane a full deadline to report before anything turns critical.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from loom.domain.records import Check

CRITICAL = "critical"
GONE_PREFIX = "Dataplane gone: "
"""How the Output of a check whose dataplane is gone starts."""
BEATS_PER_DEADLINE = 3
"""Heartbeats a dataplane sends per deadline: it is gone after missing about three."""

State = tuple[str, str]
"""A check's (status, output), as a heartbeat reports it."""


@dataclass
class Heartbeats:
    """When each runner (a dataplane, by its proxy ID) was last heard from, in memory."""

    deadline_s: float
    """A runner silent longer than this is gone (0: never)."""
    last: dict[str, float] = field(default_factory=dict)
    """Each runner's last heartbeat."""
    appeared: dict[str, float] = field(default_factory=dict)
    """When a runner never heard from was first asked about: its deadline counts from then.
    The server asks about every runner that owns checks each sweep from its start, so that is
    the start (a restart's grace) or, for a proxy registered later, its registration."""

    @property
    def interval_s(self) -> float:
        """How often a dataplane should send its heartbeat."""
        return self.deadline_s / BEATS_PER_DEADLINE

    def heard(self, runner: str, now: float) -> None:
        self.last[runner] = now

    def silent_for(self, runner: str, now: float) -> float | None:
        """Seconds ``runner`` has been silent, once past the deadline; None while alive."""
        if self.deadline_s <= 0:
            return None
        since = self.last.get(runner)
        if since is None:
            since = self.appeared.setdefault(runner, now)
        silent = now - since
        return silent if silent > self.deadline_s else None

    def forget(self, keep: Iterable[str], now: float) -> None:
        """Drop what is known of runners owning no check: when they appeared, and their
        last heartbeat once past the deadline (a check re-registered under a runner that
        still beats is judged by that runner's heartbeats, not as new)."""
        kept = set(keep)
        for runner in set(self.appeared) - kept:
            del self.appeared[runner]
        for runner in set(self.last) - kept:
            if now - self.last[runner] > self.deadline_s:
                del self.last[runner]


def gone_output(runner: str, silent_s: float, deadline_s: float, ever_heard: bool) -> str:
    """The critical Output of a check whose dataplane ``runner`` is gone."""
    if ever_heard:
        what = f"has sent nothing for {silent_s:.0f}s since its last heartbeat"
    else:
        what = (f"has sent no heartbeat in the {silent_s:.0f}s since this server started "
                "or its checks were registered")  # fmt: skip
    return (
        f"{GONE_PREFIX}the dataplane of {runner} {what} (deadline {deadline_s:g}s), so this "
        "check is not running"
    )


def gone_writes(
    owned: Mapping[str, Iterable[Check]], beats: Heartbeats, now: float
) -> list[tuple[Check, str]]:
    """The checks to turn critical, each with its Output: those of runners past their
    deadline, unless critical already (each is written once)."""
    out = []
    for runner, checks in sorted(owned.items()):
        silent = beats.silent_for(runner, now)
        if silent is None:
            continue
        said = gone_output(runner, silent, beats.deadline_s, runner in beats.last)
        out += [(c, said) for c in checks if c.status != CRITICAL]
    return out


def restore_writes(
    owned: Iterable[Check], reported: Mapping[str, State]
) -> tuple[list[tuple[Check, State]], list[str]]:
    """What a heartbeat writes: each check of the runner whose reported state differs from
    the stored one; and the check IDs reported that the runner does not run (ignored: a
    runner speaks only for its own checks)."""
    mine = {c.check_id: c for c in owned}
    writes = [
        (mine[cid], state)
        for cid, state in sorted(reported.items())
        if cid in mine and (mine[cid].status, mine[cid].output) != state
    ]
    return writes, sorted(set(reported) - set(mine))
