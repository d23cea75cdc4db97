"""``loom kv get|put|delete|export|import``: Consul's ``consul kv`` commands over ``/v1/kv``.

Flags and output are Consul's: ``get`` prints the raw value (``--recurse``: ``key:value``
lines; ``--keys``: key names cut at ``--separator``, ``/`` by default; ``--detailed``: every
field), ``put`` takes the value as an argument, ``@FILE`` or ``-`` (stdin), ``export`` prints
the JSON array ``[{"key", "flags", "value"}]`` (base64 values) that ``import`` reads back.
A condition that fails (a stale ``--cas``, a lock held elsewhere) is an error line, exit 1.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loom.cli.api import _addr, _client
from loom.cli.errors import CliError, InputError, UsageError

if TYPE_CHECKING:
    from loom.cli import Commands


class KvFailed(CliError):
    """The server said no (a missing key, a failed cas or lock): exit 1."""


def _value(entry: dict[str, Any]) -> bytes:
    raw = entry.get("Value")
    return base64.b64decode(raw) if raw else b""


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _detailed(entry: dict[str, Any]) -> str:
    rows = [
        ("CreateIndex", entry["CreateIndex"]), ("Flags", entry["Flags"]), ("Key", entry["Key"]),
        ("LockIndex", entry["LockIndex"]), ("ModifyIndex", entry["ModifyIndex"]),
        ("Session", entry.get("Session") or "-"), ("Value", _text(_value(entry))),
    ]  # fmt: skip
    return "\n".join(f"{name:<17}{value}" for name, value in rows)


def _get(args: argparse.Namespace) -> int:
    client = _client(args)
    key = args.key or ""
    if args.keys:
        found = client.kv_get(key, keys=True, separator=args.separator)
        for name in found or []:
            print(name)
        return 0
    if args.recurse:
        entries = client.kv_get(key, recurse=True) or []
        blocks = [
            _detailed(e) if args.detailed else f"{e['Key']}:{_text(_value(e))}" for e in entries
        ]
        if blocks:
            print(("\n\n" if args.detailed else "\n").join(blocks))
        return 0
    if not key:
        raise UsageError("loom kv get: a KEY is required (or --recurse / --keys)")
    entries = client.kv_get(key)
    if not entries:
        raise KvFailed(f"Error! No key exists at: {key}")
    if args.detailed:
        print(_detailed(entries[0]))
    else:
        sys.stdout.write(_text(_value(entries[0])) + "\n")
    return 0


def _data(raw: str | None) -> bytes:
    """Consul's DATA argument: ``@FILE``, ``-`` (stdin), else the text itself."""
    if raw is None:
        return b""
    if raw == "-":
        return sys.stdin.buffer.read()
    if raw.startswith("@"):
        try:
            return Path(raw[1:]).read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read {raw[1:]}: {exc.strerror or exc}") from exc
    return raw.encode()


def _put(args: argparse.Namespace) -> int:
    value = _data(args.data)
    if args.base64:
        try:
            value = base64.b64decode(value, validate=True)
        except binascii.Error as exc:
            raise InputError("loom kv put: --base64 DATA is not valid base64") from exc
    params: dict[str, str] = {}
    if args.flags is not None:
        params["flags"] = str(args.flags)
    if args.cas:
        if args.modify_index is None:
            raise UsageError("loom kv put: --cas needs --modify-index")
        params["cas"] = str(args.modify_index)
    if args.acquire or args.release:
        if not args.session:
            raise UsageError("loom kv put: --acquire and --release need --session")
        params["release" if args.release else "acquire"] = args.session
    if not _client(args).kv_put(args.key, value, **params):
        if args.acquire:
            raise KvFailed(f"Error! Did not acquire lock on: {args.key}")
        if args.release:
            raise KvFailed(f"Error! Did not release lock on: {args.key}")
        raise KvFailed(f"Error! Did not write to {args.key}: CAS failed")
    if args.acquire:
        print(f"Success! Lock acquired on: {args.key}")
    elif args.release:
        print(f"Success! Lock released on: {args.key}")
    else:
        print(f"Success! Data written to: {args.key}")
    return 0


def _delete(args: argparse.Namespace) -> int:
    key = args.key or ""
    if not key and not args.recurse:
        raise UsageError("loom kv delete: a KEY is required (or --recurse)")
    cas = None
    if args.cas:
        if args.modify_index is None:
            raise UsageError("loom kv delete: --cas needs --modify-index")
        cas = args.modify_index
    if not _client(args).kv_delete(key, recurse=args.recurse, cas=cas):
        raise KvFailed(f"Error! Did not delete key {key}: CAS failed")
    if args.recurse:
        print(f"Success! Deleted keys with prefix: {key}")
    else:
        print(f"Success! Deleted key: {key}")
    return 0


def _export(args: argparse.Namespace) -> int:
    entries = _client(args).kv_get(args.prefix or "", recurse=True) or []
    out = [{"key": e["Key"], "flags": e["Flags"], "value": e["Value"] or ""} for e in entries]
    print(json.dumps(out, indent="\t"))
    return 0


def _import(args: argparse.Namespace) -> int:
    try:
        entries = json.loads(_data(args.data if args.data is not None else "-"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"loom kv import: the data is not JSON ({exc})") from exc
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise InputError("loom kv import: expected a JSON array of {key, flags, value}")
    client = _client(args)
    for entry in entries:
        key, flags = entry.get("key"), entry.get("flags", 0)
        if not isinstance(key, str) or not isinstance(flags, int):
            raise InputError(f"loom kv import: bad entry {json.dumps(entry)[:80]}")
        try:
            value = base64.b64decode(entry.get("value") or "", validate=True)
        except binascii.Error as exc:
            raise InputError(f"loom kv import: {key}: value is not base64") from exc
        client.kv_put(args.prefix + key, value, flags=str(flags))
        print(f"Imported: {args.prefix + key}")
    return 0


def register(commands: Commands) -> None:
    kv = commands.group("kv", "read and write the key/value store (Consul's consul kv)")
    p = kv.add_parser("get", help="print the value at KEY (or a tree, or key names)")
    p.add_argument("key", nargs="?", help="the key (a prefix with --recurse or --keys)")
    p.add_argument("--recurse", action="store_true", help="every key under KEY, as key:value")
    p.add_argument("--keys", action="store_true", help="list key names under KEY, not values")
    p.add_argument(
        "--separator", default="/", help="with --keys, cut names after this (default '/')"
    )
    p.add_argument("--detailed", action="store_true", help="print every field of the entry")
    _addr(p)
    p.set_defaults(func=_get)

    p = kv.add_parser("put", help="write DATA at KEY (DATA: text, @FILE or - for stdin)")
    p.add_argument("key", help="the key to write")
    p.add_argument("data", nargs="?", help="the value: text, @FILE, or - to read stdin")
    p.add_argument("--cas", action="store_true", help="write only if --modify-index is current")
    p.add_argument("--modify-index", type=int, help="the ModifyIndex --cas compares (0: new)")
    p.add_argument("--flags", type=int, help="an unsigned integer stored with the value")
    p.add_argument("--acquire", action="store_true", help="take the key's lock for --session")
    p.add_argument("--release", action="store_true", help="give back the lock of --session")
    p.add_argument("--session", help="the session ID of --acquire or --release")
    p.add_argument("--base64", action="store_true", help="DATA is base64: decode it first")
    _addr(p)
    p.set_defaults(func=_put)

    p = kv.add_parser("delete", help="delete KEY (or every key under it)")
    p.add_argument("key", nargs="?", help="the key (a prefix with --recurse)")
    p.add_argument("--recurse", action="store_true", help="delete every key under KEY")
    p.add_argument("--cas", action="store_true", help="delete only if --modify-index is current")
    p.add_argument("--modify-index", type=int, help="the ModifyIndex --cas compares")
    _addr(p)
    p.set_defaults(func=_delete)

    p = kv.add_parser("export", help="print the keys under PREFIX as Consul's JSON export")
    p.add_argument("prefix", nargs="?", help="only keys under this prefix (default: all)")
    _addr(p)
    p.set_defaults(func=_export)

    p = kv.add_parser("import", help="write the keys of a JSON export (DATA, @FILE or -)")
    p.add_argument("data", nargs="?", help="the JSON: text, @FILE, or - for stdin (default)")
    p.add_argument("--prefix", default="", help="put this in front of every imported key")
    _addr(p)
    p.set_defaults(func=_import)
