#!/usr/bin/env bash
# Readies the host for the libvirt system tests: installs the Debian packages they use when
# missing, then starts virtlogd and libvirtd (there is no systemd to start them) unless they are
# running already, and waits until the QEMU driver answers. Run by test/host-setup.sh; safe to run
# again (it installs and starts nothing when all is there). It never fails the test run: where it
# cannot do its part it says why, and the libvirt tests skip.
set -uo pipefail

say() { echo "libvirt-setup: $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  say "not root, so libvirtd is not installed or started here (the libvirt tests will say so)"
  exit 0
fi

# the daemon and both drivers, virsh, qemu (software emulation is enough) and qemu-img for the
# overlays; busybox-static is what the tests' small guest is made of (with a kernel taken out of
# Debian's package by apt-get download and dpkg-deb, which need nothing installed), and
# qemu-guest-agent's qemu-ga (with the libraries ldd names) is its agent; e2fsprogs makes the
# staging disk of the guest agent benchmark; a virtual cluster node's files go into its overlay
# through qemu-storage-daemon (qemu-system-common), blkid and sfdisk (fdisk) find its file system,
# and debugfs (e2fsprogs) writes them
packages=(libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-daemon-driver-lxc libvirt-clients
  qemu-system-x86 qemu-system-common qemu-utils busybox-static qemu-guest-agent e2fsprogs fdisk)
missing=()
for package in "${packages[@]}"; do
  status="$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null)"
  [ "$status" = "install ok installed" ] || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }; then
    say "could not install ${missing[*]}; the libvirt tests will skip"
    exit 0
  fi
fi

mkdir -p /var/log/libvirt /var/run/libvirt

# Without udev, /dev/kvm (where there is one) stays root-only. libvirt probes QEMU's capabilities
# as root (KVM usable) and then finds KVM unusable for the libvirt-qemu user, so it throws its
# cache away and probes again (seconds) on every call that needs them. Debian's udev rule gives
# the device to group kvm, which libvirt-qemu is in; do the same. The tests' domains are of type
# qemu (software emulation) either way.
if [ -c /dev/kvm ] && getent group kvm >/dev/null && [ "$(stat -c %G /dev/kvm)" != kvm ]; then
  chgrp kvm /dev/kvm && chmod 0660 /dev/kvm
fi

# LXC on a hybrid cgroup host (v1 controllers under /sys/fs/cgroup/*, a cgroup2 tree beside them):
# libvirt counts the cgroup2 tree as in use when its root lists any controller, and then bind-mounts
# it into the container before the v1 tmpfs is there, which fails ("Unable to create directory
# /sys/fs/cgroup/unified"). A controller left on cgroup2 only because no v1 hierarchy took it
# (hugetlb, here) is given its own v1 hierarchy, as systemd's hybrid layout does; then the cgroup2
# root lists none and libvirt uses v1 alone.
v2_mount="$(awk '$3 == "cgroup2" && $2 != "/sys/fs/cgroup" { print $2; exit }' /proc/mounts)"
if [ -n "$v2_mount" ] && awk '$3 == "cgroup" { found = 1 } END { exit !found }' /proc/mounts; then
  for controller in $(cat "$v2_mount/cgroup.controllers" 2>/dev/null); do
    if ! { mkdir -p "/sys/fs/cgroup/$controller" &&
      mount -t cgroup -o "$controller" cgroup "/sys/fs/cgroup/$controller"; }; then
      say "could not mount the $controller controller as cgroup v1; LXC domains will not start here"
    fi
  done
fi

# running: the pid in the daemon's pid file is alive (the daemons themselves hold a lock on it,
# so starting a second one would fail anyway)
running() {
  local pid
  pid="$(cat "/var/run/$1.pid" 2>/dev/null)" || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

for daemon in virtlogd libvirtd; do
  if ! running "$daemon"; then
    if ! "$daemon" -d; then
      say "$daemon -d failed; the libvirt tests will skip"
      exit 0
    fi
  fi
done

# libvirtd answers once its drivers are loaded; bounded at about 30 s
for _ in $(seq 1 60); do
  if timeout 10 virsh -q -c qemu:///system version >/dev/null 2>&1; then
    exit 0
  fi
  sleep 0.5
done
say "libvirtd started but qemu:///system does not answer; the libvirt tests will skip"
exit 0
