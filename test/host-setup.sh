#!/usr/bin/env bash
# Installs the Debian packages that the tests use when they are missing. Run by `npm test`
# before the tests; safe to run again (it installs nothing when all is there).
set -euo pipefail
# npm puts node_modules/.bin first on PATH, and a package there ships a program named `nft`:
# look for the host's own commands only.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
bash "$(dirname "${BASH_SOURCE[0]}")/libvirt-setup.sh" # libvirtd and what the libvirt tests use

# package -> a command it provides (checked first, so a machine that has the tool some other
# way is left alone)
declare -A NEEDED=(
  [passwd]=useradd          # the Unix runtime creates accounts with shadow-utils
  [openssl]=openssl         # tests make throwaway CAs and certificates for https fetches
  [procps]=pkill            # tests look for and stop processes
  [python3]=python3         # the baseline benchmarks run the original node manager's approach
  [systemd]=systemd-analyze # the unit file is checked with systemd-analyze verify
  [openssh-client]=ssh-keygen # tests make real key pairs for authorized_keys
  [openssh-server]=sshd     # bench/ssh.ts runs OpenSSH's sshd (its own, on loopback) beside the gateway
  [xmlsec1]=xmlsec1         # tests sign tickets with XML-DSig as the authority does
  [iproute2]=tc             # bandwidth shaping (tc, HTB) and the tests' network namespaces
  [nftables]=nft            # the uid -> traffic class classifier
  [iperf3]=iperf3           # the bandwidth tests measure real throughput
  [util-linux]=setpriv      # tests run load as sliver uids (setpriv) pinned to one CPU (taskset)
  [quota]=setquota          # disk_max as user quotas
  [e2fsprogs]=mkfs.ext4     # the disk tests make a small quota-enabled file system
  [bzip2]=bzip2             # tasks stage in bzip2-compressed files (XSDL Compression)
  [prometheus]=promtool     # a real Prometheus scrapes the metrics endpoint; promtool checks a scrape
  [nginx-light]=nginx       # bench/fleet.ts serves the authority document to its nodes with nginx
)

missing=()
for package in "${!NEEDED[@]}"; do
  command -v "${NEEDED[$package]}" >/dev/null 2>&1 || missing+=("$package")
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "host-setup: missing ${missing[*]}; not root, so not installing them (the tests that need them will say so)" >&2
  exit 0
fi
echo "host-setup: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# Nothing installed here may start as a service: sshd would listen on port 22 for the whole
# host. A policy-rc.d that refuses every start (101) holds while installing, unless the host
# has its own; and the units of an sshd installed here are left disabled for the next boot.
own_policy=/usr/sbin/policy-rc.d
held_policy=""
if [ ! -e "$own_policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$own_policy"
  chmod 755 "$own_policy"
  held_policy="$own_policy"
  trap 'rm -f "$held_policy"' EXIT
fi
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
if [[ " ${missing[*]} " == *" openssh-server "* ]] && command -v systemctl >/dev/null 2>&1; then
  systemctl disable --now ssh.service ssh.socket >/dev/null 2>&1 || true
fi
