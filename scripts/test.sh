#!/usr/bin/env bash
# Set up everything the tests need on a Debian 12 machine and run them all:
#   ./scripts/test.sh                  apt packages, npm packages, native
#                                      addons, build, then every test
#   ./scripts/test.sh test/unit        the same set-up, then only these tests
#                                      (arguments go to vitest)
# Run it as root (it installs Debian packages with apt-get and the tests
# mount FUSE file systems and make network namespaces); as another user it
# uses sudo for apt-get. A prerequisite that cannot be installed stops it
# here, and a test whose prerequisite is missing fails: nothing is skipped.
# .ci/run calls this script.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

# What each package is for:
#   zookeeper                       the ZooKeeper driver's tests start a standalone server
#   qemu-utils libnbd-bin fio nbdkit qemu-system-x86
#                                   NBD end-to-end tests, VM boots, benchmarks
#   corosync libcpg-dev libcorosync-common-dev libqb-dev
#                                   the corosync driver's native addon and its tests
#   libfuse2 fuse3                  sheepfs (fuse-native's prebuilt addon links libfuse.so.2)
#   iproute2                        the namespaced corosync test (ip netns)
#   build-essential python3         node-gyp builds sheep's native addons
#   prometheus                      the metrics test scrapes sheep with a real Prometheus;
#                                   promtool checks the exposition format
#   libvirt-clients libxml2-utils   virt-xml-validate (which runs xmllint) checks `collie vdi libvirt-xml`
#   systemd                         systemd-analyze verify checks the unit files
#   procps                          pgrep/ps for the process title test
#   awscli s3cmd rclone             real S3 clients against sheep --s3
PKGS=(ca-certificates zookeeper
      qemu-utils libnbd-bin fio nbdkit qemu-system-x86
      corosync libcpg-dev libcorosync-common-dev libqb-dev
      libfuse2 fuse3 iproute2 build-essential python3
      prometheus libvirt-clients libxml2-utils systemd procps
      awscli s3cmd rclone)

need=()
for p in "${PKGS[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ "${#need[@]}" -gt 0 ]; then
  echo "test.sh: installing Debian packages: ${need[*]}"
  SUDO=()
  [ "$(id -u)" -eq 0 ] || SUDO=(sudo)
  "${SUDO[@]}" apt-get update -qq
  "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! command -v node >/dev/null || [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
  echo "test.sh: Node.js 20 or newer is required" >&2
  exit 1
fi
node --version
npm --version

# npm ci refuses this lock on these machines (the npm config here omits
# other platforms' optional packages from it); npm install honours it.
npm install --no-audit --no-fund
# Every native addon must build here: a missing one would turn tests into
# failures further down with a less clear message.
SHEEP_REQUIRE_NATIVE=1 npm run build
npx vitest run "$@"
