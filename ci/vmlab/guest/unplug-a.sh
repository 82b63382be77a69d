# Guest of `ci/vmlab/lab unplug`: hold rxe's uverbs device open for a while with an idle
# descriptor (no verbs object at all), then let go; the host unplugs the NIC meanwhile.
exec 3<>/dev/infiniband/uverbs0 || exit 1
echo "LAB: HOLDING $(readlink /proc/$$/fd/3)"
sleep 40
exec 3>&-
echo "LAB: RELEASED"
# Give the removal time to finish, then show that the NIC and rxe0 are gone.
sleep 20
echo "LAB: after release: rdma links: $(rdma link show | tr '\n' ' ') nics: $(ls /sys/class/net | tr '\n' ' ')"
