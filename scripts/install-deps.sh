#!/usr/bin/env bash
# Installs what the test suite needs on Debian 12 (bookworm), each dependency checked on its own:
# - DPDK's testpmd with the net_vhost and net_virtio_user drivers (package dpdk-dev; dpdk brings
#   the mempool drivers testpmd loads), the real vhost-user peer of the interop tests;
# - ip (iproute2), the network namespaces and TAP devices of the Linux network tests;
# - ping (iputils-ping), the kernel's traffic through those TAP devices;
# - tshark (Wireshark's dissectors), the independent judge of the frames the offload tests cut
#   and checksum.
# Idempotent: installs only what is missing, and nothing when everything is there.
set -euo pipefail

missing=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/bin/$1" ] || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ] || [ -x "/bin/$1" ]; }

have dpdk-testpmd || missing+=(dpdk dpdk-dev)
have ip || missing+=(iproute2)
have ping || missing+=(iputils-ping)
have tshark || missing+=(tshark)

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

for tool in dpdk-testpmd ip ping tshark; do
    have "$tool" || { echo "$tool still missing after installing ${missing[*]}" >&2; exit 1; }
done
