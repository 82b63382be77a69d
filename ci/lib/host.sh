# shellcheck shell=bash
# Host set-up shared by every script the README's commands reach: `source ci/lib/host.sh`.
#
#   host_install WHO PACKAGE...   makes every PACKAGE installed, from this machine's own Debian
#                                 suite, in one apt transaction.
#   host_require WHO TOOL...      fails at once, naming each TOOL that is not on PATH.
#
# Why one transaction, at one release: a machine image may ship a package of our set from
# a newer suite (the image this project runs on has qemu-utils 10.0 from bookworm-backports).
# Asking apt for the missing part of the set alone (qemu-system-x86, Debian 12's 7.2) makes it
# remove the newer package to satisfy the older one's dependencies, and a tool we need
# (qemu-img) disappears. So a package of the set whose installed version is newer than any
# that the configured sources offer is asked for again, at the newest version they offer
# (PACKAGE=VERSION), in the same call as the missing ones: apt brings the whole set to one
# consistent release (a downgrade where it must).
#
# WHO prefixes every message, so that a failure says which script needed what.

host_suite() {
  # shellcheck disable=SC1091
  (. /etc/os-release && echo "${VERSION_CODENAME:-}")
}

# host_installed PACKAGE: its installed version, or nothing.
host_installed() {
  { dpkg-query -W -f='${Status}\t${Version}' "$1" 2>/dev/null || true; } |
    awk -F'\t' '$1 == "install ok installed" { print $2 }'
}

# host_newest PACKAGE: the newest version the configured apt sources offer (any suite of this
# release: main, -updates, -security), or nothing.
host_newest() {
  local offered newest=""
  for offered in $(apt-cache madison "$1" 2>/dev/null | awk -F' [|] ' '{ print $2 }'); do
    if [ -z "$newest" ] || dpkg --compare-versions "$offered" gt "$newest"; then newest=$offered; fi
  done
  echo "$newest"
}

# host_foreign PACKAGE VERSION: true when VERSION is newer than every version the configured
# apt sources offer (it came from a newer suite). An older one is only superseded: apt
# upgrades it within the suite when it must, and removes nothing for it.
host_foreign() {
  local newest
  newest=$(host_newest "$1")
  [ -n "$newest" ] && dpkg --compare-versions "$2" gt "$newest"
}

host_install() {
  local who=$1 p v suite sudo=""
  shift
  local missing=() foreign=()
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  for p in "$@"; do
    [ -n "$(host_installed "$p")" ] || missing+=("$p")
  done
  # A foreign package with nothing missing beside it is left alone: the set works as it is
  # (nothing asks apt to resolve it against another suite).
  if [ ${#missing[@]} -eq 0 ]; then
    echo "$who: all packages present"
    return 0
  fi
  $sudo apt-get update -qq
  for p in "$@"; do
    v=$(host_installed "$p")
    if [ -n "$v" ] && host_foreign "$p" "$v"; then foreign+=("$p"); fi
  done
  suite=$(host_suite)
  local ask=("${missing[@]}")
  for p in "${foreign[@]}"; do
    # The newest version this machine's sources offer, which is what apt picks for the
    # missing packages beside it (the same source package has the same version there).
    v=$(host_newest "$p")
    echo "$who: $p $(host_installed "$p") is newer than ${suite:-this release} offers: installing $v with the rest, so that the set is consistent"
    ask+=("$p=$v")
  done
  echo "$who: installing ${ask[*]}"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends --allow-downgrades "${ask[@]}"
  for p in "$@"; do
    [ -n "$(host_installed "$p")" ] || { echo "$who: apt did not install $p" >&2; return 1; }
  done
}

host_require() {
  local who=$1 t missing=()
  shift
  for t in "$@"; do
    command -v "$t" >/dev/null 2>&1 || missing+=("$t")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "$who: missing on this machine after its install step: ${missing[*]}" >&2
    return 1
  fi
}
