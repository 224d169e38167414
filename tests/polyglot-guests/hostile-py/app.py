"""A Python projection that misbehaves on request, to test that the sandbox contains an
interpreter like it contains a Rust guest. Test-only: built by scripts/build-polyglot.sh as
`hostile-py.wasm` and loaded by tests/tests/polyglot_sandbox.rs.

`query(name, args)` does what `name` says:
  ok          answers {"ok":true} (the plugin still serves)
  read-file   reads /etc/passwd, letting the exception escape (a trap)
  connect     opens a TCP connection to 127.0.0.1:9, letting the exception escape (a trap)
  loop        loops forever (stopped by the time limit)
  alloc       allocates without end (stopped by the memory limit)
  probe-files, probe-sockets, probe-env, probe-clock, probe-random
              try the thing and answer what they saw, as JSON
`handle` writes one key per event, so the plugin is also a working projection.
"""

import json
import os
import random
import socket
import sys
import time

import wit_world
from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import read_model
from wit_world.imports.types import PluginInfo, PluginKind, QueryError_UnknownQuery


def outcome(action):
    try:
        return {"ok": repr(action())}
    except BaseException as e:  # noqa: BLE001 - a probe reports whatever happened
        return {"err": f"{type(e).__name__}: {e}"}


def probe_files():
    def write():
        with open("escape.txt", "w") as f:
            f.write("out")

    return {
        "read": outcome(lambda: open("/etc/passwd").read()),
        "create": outcome(write),
        "list": outcome(lambda: os.listdir(".")),
    }


def probe_sockets():
    def tcp():
        return connect()

    def resolve():
        return socket.getaddrinfo("example.com", 80)

    def udp():
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("0.0.0.0", 0))
        return s

    def listen():
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("0.0.0.0", 0))
        s.listen()
        return s

    return {
        "tcp": outcome(tcp),
        "udp": outcome(udp),
        "listen": outcome(listen),
        "resolve": outcome(resolve),
    }


def probe_clock():
    wall = time.time()
    start = time.monotonic()
    time.sleep(10)
    return {"wall_ms": int(wall * 1000), "slept_ns": int((time.monotonic() - start) * 1e9)}


def alloc():
    hoard = []
    while True:
        hoard.append(bytearray(4 * 1024 * 1024))


def loop():
    n = 0
    while True:
        n += 1


def read_file():
    return open("/etc/passwd").read()


def connect():
    # A numeric address and a raw socket: straight to wasi:sockets, no name lookup.
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.connect(("127.0.0.1", 9))
    return s


ATTACKS = {
    "ok": lambda: {"ok": True},
    "read-file": read_file,
    "connect": connect,
    "loop": loop,
    "alloc": alloc,
    "probe-files": probe_files,
    "probe-sockets": probe_sockets,
    "probe-env": lambda: {"vars": len(os.environ), "args": len(sys.argv)},
    "probe-clock": probe_clock,
    "probe-random": lambda: {"random": random.random(), "urandom": os.urandom(8).hex()},
}


class WitWorld(wit_world.WitWorld):
    def describe(self) -> PluginInfo:
        return PluginInfo(
            name="hostile-py", kind=PluginKind.PROJECTION, version="0.0.1", handles=[], upcasts=[]
        )


class Projection(exports.Projection):
    def handle(self, events) -> None:
        for event in events:
            read_model.put(f"seen/{event.position:08}", event.event_type)

    def query(self, name: str, args: str) -> str:
        attack = ATTACKS.get(name)
        if attack is None:
            raise Err(QueryError_UnknownQuery(f"no query named {json.dumps(name)}"))
        return json.dumps(attack())
