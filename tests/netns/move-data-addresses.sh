#!/bin/sh
# Run by `kawarimi ctl migrate --exec` while the job is detached (tests/tests/netns_migration.rs):
# checks that no rank holds a socket on the data network any more, then takes every rank's
# data address away and gives it one in another subnet.
#
# usage: move-data-addresses.sh NS_PREFIX RANKS CTL_NET OLD_NET NEW_NET
#   Rank i runs in namespace NS_PREFIX<i>, has CTL_NET.(10+i) on `ctl` and OLD_NET.(10+i)/24
#   on `data`; afterwards it has NEW_NET.(10+i)/24 on `data` and nothing else there.
#   A NET is the first three octets of a /24, e.g. 198.19.1.
set -eu
[ $# -eq 5 ] || { echo "usage: $0 NS_PREFIX RANKS CTL_NET OLD_NET NEW_NET" >&2; exit 2; }
prefix=$1 ranks=$2 ctl=$3 old=$4 new=$5

# a.b.c.d as /proc/net/tcp prints it: the 32-bit word in host byte order, in hex.
proc_hex() {
    set -- $(echo "$1" | tr . ' ')
    if [ "$(printf '\001\000' | od -An -tu2 | tr -d ' ')" = 1 ]; then
        printf '%02X%02X%02X%02X' "$4" "$3" "$2" "$1"   # little-endian
    else
        printf '%02X%02X%02X%02X' "$1" "$2" "$3" "$4"
    fi
}

# First every namespace is checked, then every address moved: a failed check changes nothing.
i=0
while [ "$i" -lt "$ranks" ]; do
    ns=$prefix$i
    # Detached: every socket a process can still hold (established, connecting, listening,
    # closed by the peer but not by us) must be a control connection from the ctl address.
    ctl_hex=$(proc_hex "$ctl.$((10 + i))")
    held=$(ip netns exec "$ns" cat /proc/net/tcp /proc/net/tcp6 | awk -v ctl="$ctl_hex" '
        NR > 1 && $1 ~ /^[0-9]+:$/ && ($4 == "01" || $4 == "02" || $4 == "03" || $4 == "08" || $4 == "0A") {
            split($2, local, ":"); if (local[1] != ctl) print $2, $3, "state", $4 }')
    if [ -n "$held" ]; then
        echo "move-data-addresses: namespace $ns still holds data-path sockets while detached:" >&2
        echo "$held" >&2
        exit 1
    fi
    i=$((i + 1))
done
i=0
while [ "$i" -lt "$ranks" ]; do
    ns=$prefix$i
    host=$((10 + i))
    ip -n "$ns" addr del "$old.$host/24" dev data
    ip -n "$ns" addr add "$new.$host/24" dev data
    now=$(ip -n "$ns" -4 -o addr show dev data | awk '{print $4}')
    if [ "$now" != "$new.$host/24" ]; then
        echo "move-data-addresses: $ns has [$now] on data, expected $new.$host/24" >&2
        exit 1
    fi
    echo "$ns: data $old.$host -> $new.$host"
    i=$((i + 1))
done
