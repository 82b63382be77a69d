#!/usr/bin/env python3
"""A small QMP client for the VM lab (python3 standard library only).

As a module:
    from qmp import QMP
    with QMP("/tmp/.../a.qmp") as q:           # connects, reads the greeting, qmp_capabilities
        q.execute("device_del", {"id": "nic1"})
        ev = q.wait_event("DEVICE_DELETED", timeout=20, data={"device": "nic1"})  # None on timeout

Events that arrive while waiting for a command's reply, or for another event, are kept and
handed to a later wait_event (QMP sends events only to connected clients, so an unplug and
the wait for its DEVICE_DELETED must share one connection).

As a command (prints one JSON line per reply or event; "t" = seconds since connecting, "wall" =
the host's clock, time.time()):
    qmp.py SOCKET execute COMMAND [JSON-ARGUMENTS]
    qmp.py SOCKET wait-event EVENT [--device ID] [--timeout S]
    qmp.py SOCKET device-del ID [--timeout S]
        device_del, then wait for DEVICE_DELETED of ID; prints `sent` at once and `deleted` or
        `timeout` lines with the elapsed time; exit 0 when deleted, 1 on timeout.
    qmp.py SOCKET nic-add ID NETDEV BUS MAC
        device_add of a virtio-net-pci NIC.
"""
import json
import socket
import sys
import time


class QMPError(RuntimeError):
    pass


class QMP:
    def __init__(self, path, timeout=10.0):
        self.t0 = time.monotonic()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self.buf = b""
        self.events = []
        greeting = self._read(timeout)
        if greeting is None or "QMP" not in greeting:
            raise QMPError(f"no QMP greeting from {path}: {greeting}")
        self.execute("qmp_capabilities")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.sock.close()

    def elapsed(self):
        return time.monotonic() - self.t0

    def _read(self, timeout):
        """The next message, or None when none arrives within timeout (seconds)."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except (socket.timeout, TimeoutError):
                return None
            if not chunk:
                raise QMPError("QMP connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        msg = json.loads(line)
        if "event" in msg:
            msg["t"] = round(self.elapsed(), 3)
        return msg

    def execute(self, command, arguments=None, timeout=30.0):
        """Runs a command and returns its "return" value; raises QMPError on an error reply."""
        req = {"execute": command}
        if arguments:
            req["arguments"] = arguments
        self.sock.sendall((json.dumps(req) + "\n").encode())
        deadline = time.monotonic() + timeout
        while True:
            msg = self._read(max(0.0, deadline - time.monotonic()))
            if msg is None:
                raise QMPError(f"{command}: no reply within {timeout} s")
            if "event" in msg:
                self.events.append(msg)
            elif "error" in msg:
                raise QMPError(f"{command}: {msg['error'].get('class')}: {msg['error'].get('desc')}")
            elif "return" in msg:
                return msg["return"]

    def wait_event(self, name, timeout, data=None):
        """The first event called name whose data has the items of `data`, or None on timeout."""

        def matches(ev):
            return ev.get("event") == name and all(
                ev.get("data", {}).get(k) == v for k, v in (data or {}).items())

        for i, ev in enumerate(self.events):
            if matches(ev):
                return self.events.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            msg = self._read(left)
            if msg is None:
                return None
            if "event" not in msg:
                continue
            if matches(msg):
                return msg
            self.events.append(msg)


def _opt(args, name, default):
    if name in args:
        i = args.index(name)
        value = args[i + 1]
        del args[i:i + 2]
        return value
    return default


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    path, cmd, args = argv[1], argv[2], list(argv[3:])
    timeout = float(_opt(args, "--timeout", "30"))
    device = _opt(args, "--device", None)
    def out(obj):
        obj["wall"] = round(time.time(), 3)
        print(json.dumps(obj), flush=True)

    with QMP(path) as q:
        if cmd == "execute":
            out({"return": q.execute(args[0], json.loads(args[1]) if len(args) > 1 else None)})
            return 0
        if cmd == "wait-event":
            ev = q.wait_event(args[0], timeout, {"device": device} if device else None)
            out(ev if ev else {"timeout": timeout})
            return 0 if ev else 1
        if cmd == "device-del":
            t = q.elapsed()
            q.execute("device_del", {"id": args[0]})
            out({"sent": "device_del", "device": args[0], "t": round(t, 3)})
            ev = q.wait_event("DEVICE_DELETED", timeout, {"device": args[0]})
            if ev:
                out({"deleted": args[0], "after_s": round(ev["t"] - t, 3), "event": ev})
                return 0
            out({"timeout": timeout, "device": args[0], "after_s": round(q.elapsed() - t, 3)})
            return 1
        if cmd == "nic-add":
            nic, netdev, bus, mac = args
            out({"return": q.execute("device_add", {"driver": "virtio-net-pci", "id": nic, "netdev": netdev,
                                                    "bus": bus, "mac": mac})})
            return 0
    print(f"qmp.py: unknown command {cmd}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except QMPError as e:
        print(f"qmp.py: {e}", file=sys.stderr)
        sys.exit(1)
