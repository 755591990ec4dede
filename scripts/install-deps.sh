#!/usr/bin/env bash
# Installs what the test suite needs on Debian 12 (bookworm), each dependency checked on its own:
# - DPDK's testpmd with the net_vhost and net_virtio_user drivers (package dpdk-dev; dpdk brings
#   the mempool drivers testpmd loads), the real vhost-user peer of the interop tests;
# - ip (iproute2), the network namespaces and TAP devices of the Linux network tests;
# - ping (iputils-ping), the kernel's traffic through those TAP devices;
# - socat and sha256sum (coreutils), a TCP transfer between namespaces through the switch;
# - tcpdump, frames captured inside a namespace;
# - QEMU (qemu-system-x86), Debian's kernel (linux-image-amd64) and a static busybox
#   (busybox-static), a Linux guest booted by the tests on a vhost-user port (TCG, no KVM needed);
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
# Installed without their recommends: the kernel's and QEMU's would bring firmware and desktop packages.
lean=()
have socat || lean+=(socat)
have tcpdump || lean+=(tcpdump)
have qemu-system-x86_64 || lean+=(qemu-system-x86)
compgen -G "/boot/vmlinuz-*" >/dev/null || lean+=(linux-image-amd64)
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q "ok installed" || lean+=(busybox-static)

if [ ${#missing[@]} -eq 0 ] && [ ${#lean[@]} -eq 0 ]; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

# noninteractive: wireshark-common's question about non-root capture keeps its default (no).
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
if [ ${#missing[@]} -gt 0 ]; then
    $SUDO apt-get install -y -q "${missing[@]}"
fi
if [ ${#lean[@]} -gt 0 ]; then
    $SUDO apt-get install -y -q --no-install-recommends "${lean[@]}"
fi

for tool in dpdk-testpmd ip ping tshark socat tcpdump qemu-system-x86_64 busybox; do
    have "$tool" || { echo "$tool still missing after installing ${missing[*]} ${lean[*]}" >&2; exit 1; }
done
compgen -G "/boot/vmlinuz-*" >/dev/null || { echo "no kernel in /boot after installing ${lean[*]}" >&2; exit 1; }
