# shellcheck shell=bash
# Shared by the ops tests: paths, and ensure_tools, which installs the validation tools a fresh
# Debian 12 lacks (the test setup installs them; nothing is silently skipped). Sourced.
set -euo pipefail
SRC=${IDENTITY_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)}
BUILD_DIR=${IDENTITY_BUILD_DIR:-$SRC/build}
TOOLS=$BUILD_DIR/ops-tools
PY=/usr/bin/python3
export PATH=$TOOLS/bin:$PATH

fail() { echo "FAIL: $*" >&2; exit 1; }
skip() { echo "SKIP: $*"; exit 0; }

# apt-get install of the named Debian packages, serialised by a lock so parallel tests don't clash.
apt_install() {
  [ "$(id -u)" -eq 0 ] || fail "missing Debian packages $* (run as root, or install them)"
  mkdir -p "$TOOLS"
  (
    flock -w 600 9 || fail "timed out waiting for the ops-tools lock"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends "$@" >"$TOOLS/apt.log" 2>&1 ||
      { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq --no-install-recommends "$@" >"$TOOLS/apt.log" 2>&1; } ||
      { cat "$TOOLS/apt.log" >&2; fail "apt-get install $* failed"; }
  ) 9>"$TOOLS.lock"
}

# ensure_tools tool...: yamllint docker-compose shellcheck pyyaml kubectl promtool
ensure_tools() {
  local t need=()
  for t in "$@"; do
    case $t in
      yamllint | docker-compose | shellcheck) command -v "$t" >/dev/null || need+=("$t") ;;
      pyyaml) "$PY" -c 'import yaml' 2>/dev/null || need+=(python3-yaml) ;;
      # The machine image ships kubectl (with kustomize v5); else Debian's kubernetes-client.
      kubectl) command -v kubectl >/dev/null || need+=(kubernetes-client) ;;
      promtool) ;;
      *) fail "unknown tool $t" ;;
    esac
  done
  [ ${#need[@]} -eq 0 ] || apt_install "${need[@]}"
  for t in "$@"; do [ "$t" = promtool ] && ensure_promtool; done
  return 0
}

# promtool comes from Debian's `prometheus` package. Installing that package would also start a
# Prometheus server, so only the package file is fetched and promtool unpacked into build/ops-tools.
ensure_promtool() {
  command -v promtool >/dev/null && return 0
  mkdir -p "$TOOLS/bin" "$TOOLS/deb"
  (
    flock -w 600 9 || fail "timed out waiting for the ops-tools lock"
    [ -x "$TOOLS/bin/promtool" ] && exit 0
    cd "$TOOLS/deb"
    # _apt cannot write into a root-owned build dir; download unsandboxed quietly.
    apt-get download -o APT::Sandbox::User=root prometheus >"$TOOLS/apt.log" 2>&1 ||
      { apt-get update -qq >/dev/null 2>&1 && apt-get download -o APT::Sandbox::User=root prometheus >"$TOOLS/apt.log" 2>&1; } ||
      { cat "$TOOLS/apt.log" >&2; fail "apt-get download prometheus failed"; }
    rm -rf x && dpkg-deb -x prometheus_*.deb x
    install -m 0755 x/usr/bin/promtool "$TOOLS/bin/promtool"
    rm -rf x prometheus_*.deb
  ) 9>"$TOOLS.lock"
  command -v promtool >/dev/null || fail "promtool not found after unpacking"
}
