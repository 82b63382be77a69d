# Guest of `ci/vmlab/lab unplug`. Round 1: a shell holds rxe's uverbs device open with an idle
# descriptor (no verbs object at all), then lets go; the host unplugs the NIC meanwhile.
# Round 2: once the host has plugged the NIC back, Soft-RoCE goes on it again and kawarimi's
# verbs resources hold the device, then kawarimi releases them.
exec 3<>/dev/infiniband/uverbs0 || exit 1
echo "LAB: SHELL HOLDING $(readlink /proc/$$/fd/3)"
sleep 40
exec 3>&-
echo "LAB: SHELL RELEASED"
# Wait for the NIC to go, then to come back (the host's device_add).
for i in $(seq 1 120); do [ -z "$(ls /sys/class/net | grep -v '^lo$')" ] && break; sleep 0.5; done
echo "LAB: NIC gone; rdma links: [$(rdma link show | tr '\n' ' ')]"
for i in $(seq 1 240); do dev=$(ls /sys/class/net | grep -v '^lo$' | head -1); [ -n "$dev" ] && break; sleep 0.5; done
[ -n "$dev" ] || { echo "LAB: the NIC never came back"; exit 1; }
ip link set "$dev" up
ip addr add 10.9.0.1/24 dev "$dev"
rdma link add rxe0 type rxe netdev "$dev" || exit 1
for i in $(seq 1 40); do ibv_devinfo -d rxe0 2>/dev/null | grep -q PORT_ACTIVE && break; sleep 0.5; done
echo "LAB: NIC back as $dev; $(rdma link show | tr '\n' ' ')"
/host/kawarimi verbs-hold 40 || exit 1
sleep 20
echo "LAB: after kawarimi's release: rdma links: [$(rdma link show | tr '\n' ' ')]"
