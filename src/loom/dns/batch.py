"""Many UDP datagrams per system call: ``recvmmsg``/``sendmmsg`` through ctypes, on Linux.

Python's socket module reads and writes one datagram per call, and on the DNS proxy's hot path
those calls were most of the time (issue 17's profile: 72% in ``recvfrom``/``sendto``). Linux
has had ``recvmmsg`` (2.6.33) and ``sendmmsg`` (3.0) for batches; Python does not expose them,
so this module calls libc directly on preallocated buffers: one call reads every datagram
waiting (up to ``slots``), one call sends every answer queued since.

The message headers, I/O vectors, addresses and payloads all live in ``bytearray``s allocated
once, viewed as ctypes structures (for the layout) and as integer memoryviews (for fast field
writes on the packet path). Answers are sent from the very slots their queries came in: the
kernel left the sender's address in the slot's header, and a DNS answer starts with its
query's ID, already in place, so a replayed answer is one copy after those two bytes and one
length, and no address ever becomes a Python tuple (``address()`` makes one for the rare
forwarded query).

``receive(wait=True)`` blocks in ``recvmmsg`` (``MSG_WAITFORONE``: until the first datagram,
then whatever else is waiting) on a blocking socket, for a thread of its own; ctypes lets go
of the GIL for the call.

``UdpBatch.create`` returns None where this is unavailable (not Linux, no such libc symbols,
an unusual pointer size): the caller keeps its plain per-datagram loop.
"""

from __future__ import annotations

import ctypes
import errno
import socket
import sys
from collections.abc import Mapping
from typing import Any, NamedTuple

UDP_BATCH = 64
"""Datagrams read per call (and so at most answered per call)."""
SLOT_SIZE = 4096
"""Bytes per slot, query in and answer out; a longer answer is sent by plain ``sendto``."""
_NAME_SIZE = 28
"""Room for a sender address: ``sizeof(struct sockaddr_in6)``, the larger of the two."""
_MSG_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0x40)  # 0x40 on Linux, the one user
_MSG_WAITFORONE = 0x10000
"""recvmmsg: block for the first datagram only, then take what else is waiting (Linux)."""


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_void_p),
        ("namelen", ctypes.c_uint32),
        ("iov", ctypes.c_void_p),
        ("iovlen", ctypes.c_size_t),
        ("control", ctypes.c_void_p),
        ("controllen", ctypes.c_size_t),
        ("flags", ctypes.c_int),
    ]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("hdr", _MsgHdr), ("len", ctypes.c_uint32)]


_HDR = ctypes.sizeof(_MMsgHdr)
_IOV = ctypes.sizeof(_IoVec)


class _Calls(NamedTuple):
    """libc's two calls, each bound twice: ``recv``/``send`` bare (no argument conversion, no
    errno saved: ~1.5 us less per call from Python), ``recv_errno``/``send_errno`` typed and
    saving errno, for the retry after a failure, which alone needs to know why."""

    recv: Any
    send: Any
    recv_errno: Any
    send_errno: Any


def _libc_calls() -> _Calls | None:
    """libc's ``recvmmsg`` and ``sendmmsg``, bare and typed; None when there are none."""
    if not sys.platform.startswith("linux") or ctypes.sizeof(ctypes.c_void_p) != 8:
        return None
    try:
        bare = ctypes.CDLL(None)
        libc = ctypes.CDLL(None, use_errno=True)
        recv, send = libc.recvmmsg, libc.sendmmsg
        bare_recv, bare_send = bare.recvmmsg, bare.sendmmsg
    except (OSError, AttributeError):
        return None
    recv.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
    recv.restype = ctypes.c_int
    send.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    send.restype = ctypes.c_int
    # Bare: the arguments are passed as they are (ints as C ints, pointers as c_void_p).
    bare_recv.restype = bare_send.restype = ctypes.c_int
    return _Calls(bare_recv, bare_send, recv, send)


_U32_LEN = _MMsgHdr.len.offset // 4
_U32_PER_HDR = _HDR // 4
_U64_IOV_LEN = _IoVec.len.offset // 8
_ROOM = SLOT_SIZE - 2
"""Longest answer but its ID that fits a slot."""


class UdpBatch:
    """Batched receive and send on one non-blocking UDP socket (see the module docstring).

    The packet path: ``receive()`` reads the datagrams waiting and says how many; ``tail(i)``
    and ``packet(i)`` are datagram ``i``'s bytes after its ID and whole; ``reply(i, out)`` and
    ``reply_tail(i, out_but_id)`` put the answer in its slot, ``reply_known(answers)`` those of
    every datagram found in a table of answers; ``flush()`` sends every answer put since
    ``receive()``, which must come before the next one (slots are reused).
    """

    def __init__(self, sock: socket.socket, calls: _Calls, slots: int) -> None:
        self.sock = sock
        self.slots = slots
        self._calls = calls
        self._fd = sock.fileno()
        self._headers = bytearray(_HDR * slots)
        self._iovs = bytearray(_IOV * slots)
        self._data = bytearray(SLOT_SIZE * slots)
        self._names = bytearray(_NAME_SIZE * slots)
        # ctypes views (kept alive: they pin the bytearrays, whose addresses must not move).
        self._c_headers = (_MMsgHdr * slots).from_buffer(self._headers)
        self._c_iovs = (_IoVec * slots).from_buffer(self._iovs)
        self._c_data = (ctypes.c_char * len(self._data)).from_buffer(self._data)
        self._c_names = (ctypes.c_char * len(self._names)).from_buffer(self._names)
        self._at = ctypes.addressof(self._c_headers)
        self._header_at = [ctypes.c_void_p(self._at + i * _HDR) for i in range(slots)]
        """Each slot's header address, ready to pass to a bare call."""
        data_at, names_at = ctypes.addressof(self._c_data), ctypes.addressof(self._c_names)
        iovs_at = ctypes.addressof(self._c_iovs)
        for i in range(slots):
            self._c_iovs[i].base = data_at + i * SLOT_SIZE
            self._c_iovs[i].len = SLOT_SIZE
            hdr = self._c_headers[i].hdr
            hdr.name = names_at + i * _NAME_SIZE
            hdr.namelen = _NAME_SIZE
            hdr.iov = iovs_at + i * _IOV
            hdr.iovlen = 1
        self._pristine = (memoryview(bytes(self._headers)), memoryview(bytes(self._iovs)))
        """Headers and vectors as set up: copying them back re-arms slots for a receive."""
        self._used = slots
        """Slots the last receive filled (and so the last flush may have changed)."""
        self._u32 = memoryview(self._headers).cast("I")
        self._iov_u64 = memoryview(self._iovs).cast("Q")
        self._view = memoryview(self._data)
        self._sizes: list[int] = []
        self._replied: list[int] = []
        self._unsent = 0

    @classmethod
    def create(cls, sock: socket.socket, slots: int = UDP_BATCH) -> UdpBatch | None:
        """A batch on ``sock`` (AF_INET or AF_INET6 datagrams), or None where unsupported."""
        calls = _libc_calls()
        if calls is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
            return None
        return cls(sock, calls, slots)

    def close(self) -> None:
        """Let go of the buffers (the socket is the caller's)."""
        for view in (self._u32, self._iov_u64, self._view):
            view.release()

    def receive(self, wait: bool = False) -> int:
        """Read every datagram waiting, up to ``slots``, in one system call; how many.
        ``wait``: block until one comes (the socket must be blocking; its receive timeout,
        if any, ends the wait with 0)."""
        used = self._used
        if used:  # re-arm only the slots the last batch used (most batches are small)
            headers, iovs = self._pristine
            self._headers[: used * _HDR] = headers[: used * _HDR]
            self._iovs[: used * _IOV] = iovs[: used * _IOV]
        self._replied.clear()
        flags = _MSG_WAITFORONE if wait else _MSG_DONTWAIT
        n: int = self._calls.recv(self._fd, self._header_at[0], self.slots, flags, None)
        if n < 0:
            # Nothing waiting (EAGAIN), or an ICMP error queued on the socket (a client gone),
            # which fails the call and is cleared by it: the datagrams behind it come with the
            # next try. The try is typed and keeps errno, should we ever need to know why.
            n = self._calls.recv_errno(self._fd, self._at, self.slots, _MSG_DONTWAIT, None)
        if n <= 0:
            self._sizes, self._used = [], 0
            return 0
        self._used = n
        self._sizes = self._u32[_U32_LEN : n * _U32_PER_HDR : _U32_PER_HDR].tolist()
        return n

    def tail(self, index: int) -> bytes:
        """Datagram ``index`` but its first two bytes (a DNS query's ID)."""
        at = index * SLOT_SIZE
        return self._view[at + 2 : at + self._sizes[index]].tobytes()

    def packet(self, index: int) -> bytes:
        """Datagram ``index``, whole."""
        at = index * SLOT_SIZE
        return self._view[at : at + self._sizes[index]].tobytes()

    def reply_tail(self, index: int, tail: bytes) -> None:
        """Answer datagram ``index`` with its own first two bytes followed by ``tail``."""
        size = len(tail) + 2
        if size > SLOT_SIZE:
            self._send_alone(index, self.packet(index)[:2] + tail)
            return
        at = index * SLOT_SIZE
        self._view[at + 2 : at + size] = tail
        self._iov_u64[index * 2 + _U64_IOV_LEN] = size
        self._replied.append(index)

    def reply_known(self, answers: Mapping[bytes, object]) -> list[int]:
        """Answer every datagram of the batch whose bytes but the first two are a key of
        ``answers`` with a bytes value: those two bytes, then that value. The indexes of the
        others, in order, are left to the caller.

        One loop for the batch, no call per datagram: the proxy's replayed answers (most of
        its traffic) cost a slice, a lookup and a copy each.
        """
        get, data, view, iov = answers.get, self._data, self._view, self._iov_u64
        replied = self._replied
        others: list[int] = []
        at = 0
        for index, size in enumerate(self._sizes):
            out = get(view[at + 2 : at + size].tobytes())
            if type(out) is bytes and len(out) <= _ROOM:
                end = at + 2 + len(out)
                data[at + 2 : end] = out  # same length: the exported buffer does not move
                iov[index * 2 + _U64_IOV_LEN] = end - at
                replied.append(index)
            else:
                others.append(index)
            at += SLOT_SIZE
        return others

    def reply(self, index: int, out: bytes) -> None:
        """Answer datagram ``index`` with ``out``."""
        size = len(out)
        if size > SLOT_SIZE:
            self._send_alone(index, out)
            return
        at = index * SLOT_SIZE
        self._view[at : at + size] = out
        self._iov_u64[index * 2 + _U64_IOV_LEN] = size
        self._replied.append(index)

    def flush(self) -> int:
        """Send the answers put since ``receive()``; how many could not be (buffer full...).

        Answered slots are sent in runs of consecutive slots, one call each: one call in all
        when every datagram of the batch was answered at once.
        """
        failed, self._unsent = self._unsent, 0
        replied = self._replied
        count = len(replied)
        if not count:
            return failed
        replied.sort()  # reply_known's, then the caller's: a run check needs them in order
        if replied[-1] - replied[0] == count - 1:
            return failed + self._send_run(replied[0], count)
        first = prev = replied[0]
        for index in replied[1:]:
            if index != prev + 1:
                failed += self._send_run(first, prev - first + 1)
                first = index
            prev = index
        return failed + self._send_run(first, prev - first + 1)

    def address(self, index: int) -> Any:
        """The sender of datagram ``index`` as Python's socket module spells addresses."""
        at = index * _NAME_SIZE
        raw = bytes(self._names[at : at + _NAME_SIZE])
        port = raw[2] << 8 | raw[3]
        if self.sock.family == socket.AF_INET6:
            host = socket.inet_ntop(socket.AF_INET6, raw[8:24])
            flow = int.from_bytes(raw[4:8], "big")
            return host, port, flow, int.from_bytes(raw[24:28], sys.byteorder)
        return socket.inet_ntop(socket.AF_INET, raw[4:8]), port

    def _send_run(self, first: int, count: int) -> int:
        """``sendmmsg`` slots ``first`` .. ``first + count - 1``; how many were refused."""
        failed, done = 0, 0
        calls, fd = self._calls, self._fd
        while done < count:
            sent = calls.send(fd, self._header_at[first + done], count - done, 0)
            if sent < 0:  # again, typed and keeping errno, to know why
                sent = calls.send_errno(fd, self._at + (first + done) * _HDR, count - done, 0)
            if sent < 0:
                if ctypes.get_errno() == errno.EINTR:
                    continue
                sent, failed = 1, failed + 1  # skip the datagram the kernel refused
            done += sent
        return failed

    def _send_alone(self, index: int, out: bytes) -> None:
        try:
            self.sock.sendto(out, self.address(index))
        except OSError:
            self._unsent += 1
