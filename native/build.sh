#!/usr/bin/env bash
# Builds the C parts into native/build/: peercred.node (the SO_PEERCRED addon), fcntl_lock.node
# (fcntl record locks, for the account files' lock) and
# forward_api_calls (the delegate login shell). Run by `npm install` (prepare) and `npm test`
# (pretest); `npm run build:native` by hand. A target newer than its source is left alone.
#
# No node-gyp: it would download Node's headers, and a node may reach only the npm registry. The
# addon uses Node-API only, whose headers come from the node-api-headers package; its napi_*
# symbols are resolved from the node binary when it is loaded, so nothing is linked against node.
#
# Environment: CC (default cc), CFLAGS (added after ours), API_SOCKET_PATH (the forwarder's
# compiled-in default socket, /run/nodemgr/api.sock unless set).
set -euo pipefail

native_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$native_dir")"
out="$native_dir/build"
cc="${CC:-cc}"

if ! command -v "$cc" >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "build-native: no C compiler ($cc); installing gcc and libc6-dev" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends gcc libc6-dev >/dev/null
    cc=cc
  else
    echo "build-native: no C compiler ($cc) found. Install one (on Debian: apt-get install gcc libc6-dev)" \
      "or set CC, then run: npm run build:native" >&2
    exit 1
  fi
fi

# the headers are found the way Node finds the package, wherever npm placed it
include_dir="$(cd "$root" && node -p "require('node-api-headers').include_dir")" || {
  echo "build-native: the node-api-headers package is missing; run npm install in $root" >&2
  exit 1
}

mkdir -p "$out"

# build TARGET SOURCE COMMAND...: runs the compiler COMMAND (which writes TARGET.tmp) unless the
# target is newer than its source and this script and was built by the same command (recorded in
# TARGET.cmd, so that a change of CC, CFLAGS or API_SOCKET_PATH rebuilds). Writing to a temporary
# name first means an interrupted build leaves no target that looks up to date.
build() {
  local target="$1" source="$2"
  shift 2
  local command="$*"
  if [ -e "$target" ] && [ "$target" -nt "$source" ] && [ "$target" -nt "$native_dir/build.sh" ] &&
    [ "$target" -nt "$native_dir/napi_errno.h" ] &&
    [ "$(cat "$target.cmd" 2>/dev/null)" = "$command" ]; then
    return 0
  fi
  echo "build-native: $target" >&2
  "$@"
  chmod 0755 "$target.tmp"
  mv -f "$target.tmp" "$target"
  printf '%s\n' "$command" >"$target.cmd"
}

common=(-O2 -Wall -Wextra -Werror)
# shellcheck disable=SC2206 # CFLAGS is a list of words on purpose
extra=(${CFLAGS:-})
defines=()
if [ -n "${API_SOCKET_PATH:-}" ]; then defines+=("-DAPI_SOCKET_PATH=\"$API_SOCKET_PATH\""); fi

build "$out/peercred.node" "$native_dir/peercred.c" \
  "$cc" "${common[@]}" -shared -fPIC -I "$include_dir" "${extra[@]}" "$native_dir/peercred.c" -o "$out/peercred.node.tmp"
build "$out/fcntl_lock.node" "$native_dir/fcntl_lock.c" \
  "$cc" "${common[@]}" -shared -fPIC -I "$include_dir" "${extra[@]}" "$native_dir/fcntl_lock.c" -o "$out/fcntl_lock.node.tmp"
build "$out/forward_api_calls" "$native_dir/forward_api_calls.c" \
  "$cc" "${common[@]}" "${defines[@]}" "${extra[@]}" "$native_dir/forward_api_calls.c" -o "$out/forward_api_calls.tmp"

# Optional native modules, built by node-gyp where npm install could: node-pty (the ssh gateway's
# terminals; needs a C++ compiler, make and python3) and @unraid/libvirt (the libvirt runtime;
# needs the same and libvirt's headers, found with pkg-config). Where something was missing, npm
# install went on without the module. As root on Debian the missing packages are installed here
# and the module is built again; otherwise the daemon runs without what the module gives and says
# so. Either way a module that cannot be built is a printed reason, never a failed build.

# have KIND NAME: a command on PATH (cmd) or a pkg-config module (pc)
have() {
  case "$1" in
    cmd) command -v "$2" >/dev/null 2>&1 ;;
    pc) pkg-config --exists "$2" >/dev/null 2>&1 ;;
  esac
}

# optional_module MODULE WITHOUT NEED...: builds MODULE (at the version package.json asks for)
# unless it loads. WITHOUT says what is off without it; each NEED is KIND:NAME:PACKAGE, the Debian
# package that gives NAME.
optional_module() {
  local module="$1" without="$2"
  shift 2
  if (cd "$root" && node -e "import('$module').then(() => {}, () => process.exit(1))" >/dev/null 2>&1); then
    return 0
  fi
  local version need missing=()
  version="$(cd "$root" && node -p "require('./package.json').optionalDependencies['$module']")"
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    local names=()
    for need in "$@"; do names+=("$(cut -d: -f3 <<<"$need")"); done
    echo "build-native: $module is not built (it needs ${names[*]}; then run: npm install)." \
      "$without until then" >&2
    return 0
  fi
  for need in "$@"; do
    IFS=: read -r kind name package <<<"$need"
    have "$kind" "$name" || missing+=("$package")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "build-native: $module needs ${missing[*]}; installing" >&2
    export DEBIAN_FRONTEND=noninteractive
    if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }; then
      echo "build-native: could not install ${missing[*]}; $without" >&2
      return 0
    fi
  fi
  echo "build-native: building $module $version" >&2
  (cd "$root" && npm install --no-save --no-audit --no-fund "$module@$version" >&2) ||
    echo "build-native: $module could not be built; $without" >&2
}

build_tools=(cmd:g++:g++ cmd:make:make cmd:python3:python3)
optional_module node-pty "ssh terminal sessions are off" "${build_tools[@]}"
optional_module @unraid/libvirt "libvirt slivers (runtime lxc or qemu) are off" \
  "${build_tools[@]}" cmd:pkg-config:pkg-config pc:libvirt:libvirt-dev
