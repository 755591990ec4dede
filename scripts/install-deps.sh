#!/usr/bin/env bash
# Installs what the test suite needs on Debian 12 (bookworm):
# - DPDK's testpmd with the net_vhost and net_virtio_user drivers (package dpdk-dev), used as the
#   real vhost-user peer in the interop tests (dpdk brings the mempool drivers testpmd loads);
# - tshark (Wireshark's dissectors), the independent judge of the frames the offload tests cut
#   and checksum.
# Idempotent: installs only what is missing.
set -euo pipefail

missing=()
if ! command -v dpdk-testpmd >/dev/null 2>&1 && [ ! -x /usr/bin/dpdk-testpmd ]; then
    missing+=(dpdk dpdk-dev)
fi
if ! command -v tshark >/dev/null 2>&1; then
    missing+=(tshark)
fi
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

# noninteractive: wireshark-common's question about non-root capture keeps its default (no).
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q "${missing[@]}"

command -v dpdk-testpmd >/dev/null 2>&1 || [ -x /usr/bin/dpdk-testpmd ] || { echo "dpdk-testpmd still missing after installing dpdk-dev" >&2; exit 1; }
command -v tshark >/dev/null 2>&1 || { echo "tshark still missing after installing it" >&2; exit 1; }
