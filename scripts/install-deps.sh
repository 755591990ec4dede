#!/usr/bin/env bash
# Installs what the test suite needs on Debian 12 (bookworm): DPDK's testpmd with the
# net_vhost and net_virtio_user drivers (package dpdk-dev), used as the real vhost-user peer
# in the interop tests (dpdk brings the mempool drivers testpmd loads). Idempotent: does nothing when testpmd is already there.
set -euo pipefail

if command -v dpdk-testpmd >/dev/null 2>&1 || [ -x /usr/bin/dpdk-testpmd ]; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q dpdk dpdk-dev

command -v dpdk-testpmd >/dev/null 2>&1 || { echo "dpdk-testpmd still missing after installing dpdk-dev" >&2; exit 1; }
