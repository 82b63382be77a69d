#!/usr/bin/env python3
"""The hot-unplug proof of the VM lab: `unplug_proof.py QMP_SOCKET CONSOLE_LOG`.

The guest holds /dev/infiniband/uverbs0 open (an idle descriptor, nothing else), prints
`LAB: HOLDING`, and lets go `hold` seconds later (`LAB: RELEASED`). This asks QEMU to unplug the
NIC under rxe (QMP device_del) as soon as the guest holds it, and watches for DEVICE_DELETED on
the same QMP connection: it must not arrive while the descriptor is open, and must arrive
once it is closed. Prints both times; exit 0 only when both hold."""
import json
import re
import socket
import sys
import time

HELD_S = 20.0  # how long DEVICE_DELETED must stay away while the device is held
AFTER_S = 60.0  # how long it may take once the guest has let go


def wait_console(path, marker, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(path, "rb") as f:
            if marker.encode() in f.read():
                return True
        time.sleep(0.2)
    return False


def main() -> int:
    qmp_path, console = sys.argv[1], sys.argv[2]
    if not wait_console(console, "LAB: HOLDING", 120):
        print("unplug-proof: the guest never held the device")
        return 1
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(qmp_path)
    buf = b""

    def messages(timeout):
        nonlocal buf
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if line.strip():
                    yield json.loads(line)
            left = deadline - time.monotonic()
            if left <= 0:
                return
            s.settimeout(left)
            try:
                chunk = s.recv(65536)
            except (socket.timeout, TimeoutError):
                return
            if not chunk:
                return
            buf += chunk

    def send(cmd, args=None):
        s.sendall((json.dumps({"execute": cmd, "arguments": args or {}}) + "\n").encode())

    next(messages(10))  # greeting
    send("qmp_capabilities")
    for m in messages(10):
        if "return" in m:
            break
    t0 = time.monotonic()
    send("device_del", {"id": "nic1"})
    deleted = None
    for m in messages(HELD_S):
        if "error" in m:
            print(f"unplug-proof: device_del failed: {m['error']}")
            return 1
        if m.get("event") == "DEVICE_DELETED" and m.get("data", {}).get("device") == "nic1":
            deleted = time.monotonic() - t0
            break
    if deleted is not None:
        print(f"unplug-proof: DEVICE_DELETED came after {deleted:.1f} s although uverbs0 was held open")
        return 1
    print(f"unplug-proof: held: no DEVICE_DELETED within {HELD_S:.0f} s of device_del (as expected)")
    if not wait_console(console, "LAB: RELEASED", 120):
        print("unplug-proof: the guest never let go")
        return 1
    released = time.monotonic() - t0
    for m in messages(AFTER_S):
        if m.get("event") == "DEVICE_DELETED" and m.get("data", {}).get("device") == "nic1":
            deleted = time.monotonic() - t0
            break
    if deleted is None:
        print(f"unplug-proof: no DEVICE_DELETED within {AFTER_S:.0f} s of the release")
        return 1
    print(f"unplug-proof: released at {released:.1f} s; DEVICE_DELETED at {deleted:.1f} s "
          f"({deleted - released:.1f} s after the release)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
