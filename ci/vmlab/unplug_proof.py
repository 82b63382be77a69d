#!/usr/bin/env python3
"""The hot-unplug proof of the VM lab: `unplug_proof.py QMP_SOCKET CONSOLE_LOG`.

Two rounds on one QMP connection. In each, the guest holds the device (round 1: a shell with an
idle /dev/infiniband/uverbs0 descriptor; round 2: kawarimi's verbs resources) and prints
`LAB: <WHO> HOLDING`, then lets go (`LAB: <WHO> RELEASED`). This asks QEMU to unplug the NIC
under rxe (QMP device_del) as soon as the guest holds it: DEVICE_DELETED must not arrive while
the device is held, and must arrive once it is let go. Between the rounds the NIC is plugged
back (device_add). Prints the times; exit 0 only when every check holds."""
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

    def execute(cmd, args=None):
        s.sendall((json.dumps({"execute": cmd, "arguments": args or {}}) + "\n").encode())
        for m in messages(10):
            if "error" in m:
                raise RuntimeError(f"{cmd}: {m['error']}")
            if "return" in m:
                return
        raise RuntimeError(f"{cmd}: no reply")

    def deleted_within(timeout):
        for m in messages(timeout):
            if m.get("event") == "DEVICE_DELETED" and m.get("data", {}).get("device") == "nic1":
                return True
        return False

    def round_of(who):
        """device_del while `who` holds the device; DEVICE_DELETED only once it lets go."""
        if not wait_console(console, f"LAB: {who} HOLDING", 180):
            print(f"unplug-proof: {who.lower()} never held the device")
            return False
        t0 = time.monotonic()
        execute("device_del", {"id": "nic1"})
        if deleted_within(HELD_S):
            print(f"unplug-proof: {who.lower()}: DEVICE_DELETED came although the device was held")
            return False
        print(f"unplug-proof: {who.lower()} holding: no DEVICE_DELETED within {HELD_S:.0f} s of device_del")
        if not wait_console(console, f"LAB: {who} RELEASED", 120):
            print(f"unplug-proof: {who.lower()} never let go")
            return False
        released = time.monotonic() - t0
        if not deleted_within(AFTER_S):
            print(f"unplug-proof: {who.lower()}: no DEVICE_DELETED within {AFTER_S:.0f} s of the release")
            return False
        deleted = time.monotonic() - t0
        print(f"unplug-proof: {who.lower()} released at {released:.1f} s; DEVICE_DELETED at {deleted:.1f} s "
              f"({deleted - released:.1f} s after the release)")
        return True

    next(messages(10))  # greeting
    execute("qmp_capabilities")
    if not round_of("SHELL"):
        return 1
    # Plug the NIC back (its network backend stays), for the round with kawarimi.
    execute("device_add", {"driver": "virtio-net-pci", "netdev": "n1", "id": "nic1", "bus": "rp1",
                           "mac": "52:54:00:00:09:01"})
    print("unplug-proof: device_add of the NIC done")
    if not round_of("KAWARIMI"):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
