# The two-guest VM lab as a bash library: `source ci/vmlab/vmlab.sh`, then
#
#   vmlab_start            image (built once, cached), two guests booted on copy-on-write overlays,
#                          both answering over ssh, Soft-RoCE (rxe0) on each one's hot-pluggable NIC.
#                          Installs the traps that stop everything on exit, error or Ctrl-C.
#   vm_run G CMD           runs the shell command CMD in guest G (a or b) as root, over ssh;
#                          its stdin, stdout, stderr and exit status are the caller's.
#   vm_qmp G ARGS...       ci/vmlab/qmp.py on guest G's QMP socket (execute, device-del, ...).
#   vm_rxe G up|down       Soft-RoCE on G's NIC (ci/vmlab/guest-bin/lab-rxe in the guest).
#   vm_nic_add G           plugs G's rxe NIC back after a device_del (same netdev, MAC, port).
#   vmlab_stop             stops the guests and removes the lab's files (the EXIT trap does it).
#   vmlab_say MSG          prints "vmlab: MSG" to stderr.
#   VMLAB_ON_EXIT          shell code the EXIT trap also runs (after vmlab_stop).
#
# The guests (one vCPU, 1 GiB each, QEMU under nice):
#   a = vm-a: rxe NIC 10.9.1.1 (nic1 on PCIe root port rp1, hot-pluggable), tcp NIC 10.9.2.1
#   b = vm-b: rxe NIC 10.9.1.2,                                             tcp NIC 10.9.2.2
# Each NIC pair is a QEMU "stream" network over a unix socket between the two QEMUs: nothing
# leaves this machine. A third NIC per guest is QEMU user networking with only a host-loopback
# port forwarded to the guest's sshd (the host's way in). The guests reach each other by name
# over the tcp NIC (vm-a, vm-b; ssh as root without prompts, as Open MPI's mpirun needs). The
# host's repository is mounted read-only in both at the same path ($VMLAB_REPO, also /repo), so
# host builds under target/ run there (the guests are Debian 12 like the host).
#
# Knobs: KAWARIMI_VMLAB_ACCEL (tcg; kvm only where it boots Debian: on these machines a KVM
# guest prints nothing at all, with or without KAWARIMI_VMLAB_CPU=host), KAWARIMI_VMLAB_CPU
# (QEMU's -cpu), KAWARIMI_VMLAB_CACHE (image cache), KAWARIMI_VMLAB_MAX_S (a guest's longest
# life in s, default 3600: a safety net if this shell is killed without its traps running),
# KAWARIMI_VMLAB_RUN_S (the longest a command run in a guest may take, default 900; vm_run
# takes a shorter limit where it is given one),
# KAWARIMI_VMLAB_KEEP=1 (keep the temporary directory, for the consoles),
# KAWARIMI_VMLAB_RXE_NET=socket (QEMU's TCP socket network for the rxe NICs instead of a
# stream over a unix socket: it adds ~22 ms to every verbs round trip; for comparison only).
# After vmlab_start: VMLAB_WORK (temporary directory: consoles a.console/b.console, QMP sockets),
# VMLAB_IMAGE (the cached image directory), VMLAB_T_BOOT (seconds until both answered),
# VMLAB_T_RXE (seconds for rxe0 on both).

VMLAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VMLAB_REPO=$(cd "$VMLAB_DIR/../.." && pwd)
VMLAB_WORK=
VMLAB_PIDS=()

vmlab_say() { echo "vmlab: $*" >&2; }
vmlab_now() { date +%s.%N; }
vmlab_since() { awk -v a="$1" -v b="$(vmlab_now)" 'BEGIN { printf "%.1f", b - a }'; }

vmlab_stop() {
  local g p
  [ -n "$VMLAB_WORK" ] || return 0
  for g in a b; do
    if [ -S "$VMLAB_WORK/$g.ssh" ]; then
      ssh -o ControlPath="$VMLAB_WORK/$g.ssh" -O exit vmlab >/dev/null 2>&1 || true
    fi
  done
  for g in a b; do
    if [ -s "$VMLAB_WORK/$g.pid" ]; then VMLAB_PIDS+=("$(cat "$VMLAB_WORK/$g.pid")"); fi
  done
  for p in "${VMLAB_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${VMLAB_PIDS[@]}"; do
    for _ in $(seq 1 20); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$p" 2>/dev/null || true
  done
  VMLAB_PIDS=()
  if [ -n "${KAWARIMI_VMLAB_KEEP:-}" ]; then
    vmlab_say "kept $VMLAB_WORK (KAWARIMI_VMLAB_KEEP)"
  else
    rm -rf "$VMLAB_WORK"
  fi
  VMLAB_WORK=
}

# vm_boot NAME N: starts guest NAME (lab.n = N) in the background. Guest a listens on the two
# lab networks' sockets, guest b connects to them, so a goes first. QEMU runs in a session of
# its own (setsid), not as a job of the caller's shell: a bare `wait` in a test then waits for
# the test's own jobs only, and a terminal's Ctrl-C reaches the lab's traps, which stop QEMU by
# its pid ($VMLAB_WORK/NAME.pid).
vm_boot() {
  local name=$1 n=$2 server port accel=${KAWARIMI_VMLAB_ACCEL:-tcg}
  [ "$name" = a ] && server=on || server=off
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  echo "$port" > "$VMLAB_WORK/$name.port"
  # The rxe network: a stream over a unix socket, or (KAWARIMI_VMLAB_RXE_NET=socket) QEMU's
  # older TCP "socket" network on the loopback (it adds ~22 ms to every round trip), for comparison.
  local rxenet="stream,id=n1,server=$server,addr.type=unix,addr.path=$VMLAB_WORK/net-rxe.sock"
  if [ "${KAWARIMI_VMLAB_RXE_NET:-stream}" = socket ]; then
    [ "$name" = a ] && echo "$((20000 + RANDOM % 20000))" > "$VMLAB_WORK/net-rxe.port"
    if [ "$name" = a ]; then rxenet="socket,id=n1,listen=127.0.0.1:$(cat "$VMLAB_WORK/net-rxe.port")"
    else rxenet="socket,id=n1,connect=127.0.0.1:$(cat "$VMLAB_WORK/net-rxe.port")"; fi
  fi
  qemu-img create -q -f qcow2 -F raw -b "$VMLAB_IMAGE/guest.raw" "$VMLAB_WORK/$name.qcow2"
  setsid -f timeout "${KAWARIMI_VMLAB_MAX_S:-3600}" nice -n 10 qemu-system-x86_64 -name "vmlab-$name" \
    -pidfile "$VMLAB_WORK/$name.pid" \
    -accel "$accel" ${KAWARIMI_VMLAB_CPU:+-cpu "$KAWARIMI_VMLAB_CPU"} -M q35 -m 1024 -smp 1 -display none -monitor none -no-reboot \
    -serial "file:$VMLAB_WORK/$name.console" \
    -qmp "unix:$VMLAB_WORK/$name.qmp,server=on,wait=off" \
    -kernel "$VMLAB_IMAGE/vmlinuz" -initrd "$VMLAB_IMAGE/initrd.img" \
    -append "root=/dev/vda rw console=ttyS0 loglevel=4 init=/lab-node-init panic=-1 lab.name=$name lab.n=$n lab.repo=$VMLAB_REPO" \
    -drive "file=$VMLAB_WORK/$name.qcow2,if=virtio,format=qcow2,cache=unsafe" \
    -virtfs "local,path=$VMLAB_REPO,mount_tag=hostrepo,security_model=none,readonly=on" \
    -device pcie-root-port,id=rp1,chassis=1,slot=1 \
    -netdev "$rxenet" \
    -device "virtio-net-pci,netdev=n1,id=nic1,bus=rp1,mac=52:54:00:09:01:0$n" \
    -netdev "stream,id=n2,server=$server,addr.type=unix,addr.path=$VMLAB_WORK/net-tcp.sock" \
    -device "virtio-net-pci,netdev=n2,id=nic2,mac=52:54:00:09:02:0$n" \
    -netdev "user,id=n3,net=10.0.2.0/24,restrict=on,hostfwd=tcp:127.0.0.1:$port-10.0.2.15:22" \
    -device "virtio-net-pci,netdev=n3,id=nic3,mac=52:54:00:09:03:0$n" \
    </dev/null >"$VMLAB_WORK/$name.qemu.log" 2>&1
  for _ in $(seq 1 100); do [ -s "$VMLAB_WORK/$name.pid" ] && return 0; sleep 0.1; done
  vmlab_say "guest $name's QEMU did not start:"; cat "$VMLAB_WORK/$name.qemu.log" >&2
  return 1
}

vm_ssh_opts() {
  local name=$1
  echo -F /dev/null -i "$VMLAB_IMAGE/id_ed25519" -p "$(cat "$VMLAB_WORK/$name.port")" \
    -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes \
    -o ConnectTimeout=10 -o ServerAliveInterval=10 -o ServerAliveCountMax=12 \
    -o ControlPath="$VMLAB_WORK/$name.ssh"
}

# vm_wait NAME TIMEOUT: until the guest's sshd answers (then keeps one ssh connection open for
# the later commands); fails after TIMEOUT seconds or when its QEMU has gone. It tries ssh only
# once the guest's console says its init is done: before that, QEMU's user network accepts the
# connection and ssh waits out its whole ConnectTimeout for a banner that never comes.
vm_wait() {
  local name=$1 timeout=$2 t0 pid
  t0=$(date +%s)
  pid=$(cat "$VMLAB_WORK/$name.pid")
  until grep -aq "LAB: vm-$name up" "$VMLAB_WORK/$name.console" 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || { vmlab_say "guest $name's QEMU has gone:"; tail -5 "$VMLAB_WORK/$name.qemu.log" >&2; return 1; }
    [ $(( $(date +%s) - t0 )) -lt "$timeout" ] || { vmlab_say "guest $name's init did not finish within $timeout s"; return 1; }
    sleep 0.2
  done
  while :; do
    # shellcheck disable=SC2046
    if ssh $(vm_ssh_opts "$name") -o ControlMaster=yes -o ControlPersist=yes -f -N root@127.0.0.1 2>/dev/null; then
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || { vmlab_say "guest $name's QEMU has gone:"; tail -5 "$VMLAB_WORK/$name.qemu.log" >&2; return 1; }
    [ $(( $(date +%s) - t0 )) -lt "$timeout" ] || { vmlab_say "guest $name did not answer within $timeout s"; return 1; }
    sleep 1
  done
}

# vm_run [--limit S] NAME CMD...: runs the shell command CMD in guest NAME and returns its
# status. Every command has a time limit (KAWARIMI_VMLAB_RUN_S, default 900 s, or S): a program
# that hangs in a guest (a CI run once lost an hour to perftest's ib_read_bw stuck on Soft-RoCE)
# is ended there by timeout(1), with its whole process group, and the status is then 124. The
# host's own timeout is a backstop for a guest that stops answering altogether.
vm_run() {
  local limit=${KAWARIMI_VMLAB_RUN_S:-900} name rc=0
  if [ "$1" = --limit ]; then limit=$2; shift 2; fi
  name=$1; shift
  # shellcheck disable=SC2046
  timeout -k 5 $((limit + 30)) ssh $(vm_ssh_opts "$name") -o ControlMaster=no root@127.0.0.1 \
    "timeout -k 10 $limit bash -c $(printf %q "$*")" || rc=$?
  [ "$rc" != 124 ] || vmlab_say "guest $name: this command did not finish within $limit s, so it was ended: $*"
  return "$rc"
}

vm_qmp() {
  local name=$1; shift
  python3 "$VMLAB_DIR/qmp.py" "$VMLAB_WORK/$name.qmp" "$@"
}

vm_rxe() { vm_run "$1" "$VMLAB_REPO/ci/vmlab/guest-bin/lab-rxe $2"; }

vm_nic_add() {
  local n; [ "$1" = a ] && n=1 || n=2
  vm_qmp "$1" nic-add nic1 n1 rp1 "52:54:00:09:01:0$n"
}

# vmlab_start: everything up; a failure returns non-zero (the EXIT trap cleans up).
vmlab_start() {
  local t0 t1 g
  VMLAB_IMAGE=$("$VMLAB_DIR/image") || return 1
  [ -f "$VMLAB_IMAGE/guest.raw" ] ||
    { vmlab_say "ci/vmlab/image printed ${VMLAB_IMAGE@Q}, not an image directory (its stdout must hold the path alone)"; return 1; }
  VMLAB_WORK=$(mktemp -d /tmp/kawarimi-vmlab.XXXXXX)
  trap 'vmlab_stop; eval "${VMLAB_ON_EXIT:-}"' EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  vmlab_say "booting guests a and b under ${KAWARIMI_VMLAB_ACCEL:-tcg} (consoles in $VMLAB_WORK)"
  t0=$(vmlab_now)
  vm_boot a 1 || return 1
  for _ in $(seq 1 50); do [ -S "$VMLAB_WORK/net-tcp.sock" ] && break; sleep 0.1; done
  sleep 0.5
  vm_boot b 2 || return 1
  for g in a b; do
    vm_wait "$g" 300 || { tail -20 "$VMLAB_WORK/$g.console" >&2; return 1; }
    vmlab_say "guest $g answers over ssh $(vmlab_since "$t0") s after QEMU started ($(grep -a 'LAB: vm-' "$VMLAB_WORK/$g.console" | tr -d '\r' | sed 's/^LAB: //'))"
  done
  VMLAB_T_BOOT=$(vmlab_since "$t0")
  t1=$(vmlab_now)
  for g in a b; do vm_rxe "$g" up || return 1; done
  VMLAB_T_RXE=$(vmlab_since "$t1")
  vmlab_say "both guests up in $VMLAB_T_BOOT s; rxe0 on both in $VMLAB_T_RXE s"
}
