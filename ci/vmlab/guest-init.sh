#!/bin/sh
# PID 1 of a lab guest (kernel cmdline init=/lab-init.sh): mounts, the lab network, Soft-RoCE
# on it, then runs the script the host named (labcmd=) from the host's shared folder and
# powers off. Parameters come from the kernel command line: labip=, labcmd=.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc; mount -t sysfs sys /sys 2>/dev/null; mount -t devtmpfs dev /dev 2>/dev/null
mkdir -p /dev/pts /run /tmp; mount -t devpts devpts /dev/pts; mount -t tmpfs tmp /tmp; mount -t tmpfs run /run
modprobe 9pnet_virtio; modprobe 9p; mkdir -p /host
mount -t 9p -o trans=virtio,version=9p2000.L hostshare /host
arg() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" /proc/cmdline; }
ip link set lo up
dev=$(ls /sys/class/net | grep -v '^lo$' | head -1)
ip link set "$dev" up
ip addr add "$(arg labip)/24" dev "$dev"
modprobe rdma_rxe && rdma link add rxe0 type rxe netdev "$dev"
echo "LAB: guest $(arg labip) up: $(rdma link show 2>&1 | tr '\n' ' ')"
sh "/host/$(arg labcmd)"; echo "LAB: exit $?"
echo 1 > /proc/sys/kernel/sysrq; echo o > /proc/sysrq-trigger
