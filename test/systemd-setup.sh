#!/usr/bin/env bash
# Makes (once) what test/systemd/ needs to run nodemgr's unit under a real systemd: a small
# Debian 12 virtual machine image, booted by QEMU, in which systemd is PID 1 with the unified
# cgroup hierarchy and every controller, as on a Debian 12 host.
#
# Why a virtual machine and not systemd-nspawn: a container shares the host's cgroup hierarchies,
# and on a host that mounts the controllers as cgroup v1 (as CI's does), nspawn mounts them
# read-only inside the container, so neither the container's systemd nor nodemgr could make a
# cgroup with a limit in it; and a container's tc would shape a device of the host's choosing.
# A virtual machine has its own kernel and therefore its own cgroups and network devices.
#
# The image is cached in $NODEMGR_TEST_CACHE (default /var/cache/nodemgr-test) under a name made
# from the package list and the customisation, so a change of either makes a new image and an
# unchanged one is built once: the first run takes a few minutes
# (mmdebstrap fetches and unpacks the packages), later ones nothing. Each test boots a throwaway
# copy-on-write overlay of it. Prints the image's directory on stdout.
#
# Needs root (mmdebstrap, mkfs.ext4 -d) and Debian's package mirror as apt is configured.
set -euo pipefail
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# package -> a command it provides, as in host-setup.sh
declare -A NEEDED=(
  [mmdebstrap]=mmdebstrap           # the guest's root file system, from Debian's packages
  [qemu-system-x86]=qemu-system-x86_64 # the virtual machine (software emulation where there is no /dev/kvm)
  [qemu-utils]=qemu-img             # the throwaway overlay over the cached image
  [e2fsprogs]=mkfs.ext4             # the image's file system, filled from a directory (mkfs.ext4 -d)
  [openssh-client]=ssh              # the test runs its commands in the guest over ssh
)
# What the guest is made of: systemd as init, a kernel, sshd for the test's commands, and the
# programs nodemgr uses for accounts (passwd, in every Debian root), limits (iproute2, nftables)
# and processes (procps).
GUEST_PACKAGES=systemd,systemd-sysv,dbus,udev,kmod,e2fsprogs,linux-image-amd64,openssh-server,iproute2,nftables,procps

# The customize hooks run on the host with the new root as $1 (IMAGE_DIR and BUILD_DIR are set
# below).
HOOKS=(
  'echo nodemgr-guest >"$1/etc/hostname"'
  'printf "127.0.0.1 localhost\n127.0.1.1 nodemgr-guest\n" >"$1/etc/hosts"'
  'echo "LABEL=nodemgr-root / ext4 rw,errors=remount-ro 0 1" >"$1/etc/fstab"'
  'printf "[Match]\nType=ether\n\n[Network]\nDHCP=ipv4\n" >"$1/etc/systemd/network/20-wired.network"'
  'chroot "$1" systemctl enable systemd-networkd.service ssh.service'
  'chroot "$1" passwd -d root >/dev/null'
  'install -d -m 0700 "$1/root/.ssh" && install -m 0600 "$IMAGE_DIR/id_ed25519.pub" "$1/root/.ssh/authorized_keys"'
  'cp -L "$1"/boot/vmlinuz-* "$BUILD_DIR/vmlinuz" && cp -L "$1"/boot/initrd.img-* "$BUILD_DIR/initrd.img"'
)
IMAGE_SIZE=3G

log() { echo "systemd-setup: $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  log "must run as root (mmdebstrap, mkfs.ext4)"
  exit 1
fi

missing=()
for package in "${!NEEDED[@]}"; do
  command -v "${NEEDED[$package]}" >/dev/null 2>&1 || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

cache="${NODEMGR_TEST_CACHE:-/var/cache/nodemgr-test}"
# The image is what the packages and the hooks make: its name changes with them, not with comments.
key="$(printf '%s\n' "$GUEST_PACKAGES" "$IMAGE_SIZE" "${HOOKS[@]}" | sha256sum | cut -c1-16)"
dir="$cache/vm-$key"
if [ -e "$dir/ready" ]; then
  echo "$dir"
  exit 0
fi

log "building the guest image in $dir (a few minutes, once)"
rm -rf "$dir"
mkdir -p "$dir"
work="$(mktemp -d "$cache/build.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# The key the test logs in with; the guest is reached only on loopback (QEMU's forwarded port).
ssh-keygen -q -t ed25519 -N '' -C nodemgr-systemd-test -f "$dir/id_ed25519"

hook_args=()
for hook in "${HOOKS[@]}"; do hook_args+=("--customize-hook=$hook"); done
# mmdebstrap runs each hook with sh -c; the directories reach it through the environment.
export IMAGE_DIR="$dir" BUILD_DIR="$work"
mmdebstrap --variant=minbase --include="$GUEST_PACKAGES" "${hook_args[@]}" bookworm "$work/root" >&2

# Room for nodemgr, Node.js and the slivers' homes; the file is sparse.
mkfs.ext4 -q -F -L nodemgr-root -d "$work/root" "$work/base.img" "$IMAGE_SIZE" >&2
mv "$work/base.img" "$work/vmlinuz" "$work/initrd.img" "$dir/"
touch "$dir/ready"
log "guest image ready"
echo "$dir"
