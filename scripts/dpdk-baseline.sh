#!/usr/bin/env bash
# DPDK's own vhost-user round trip on this machine, the yardstick for Rings' busy-poll figures:
# testpmd's net_vhost back-end in macswap mode in one process, testpmd's net_virtio_user
# front-end in flowgen mode in another (both --no-huge), 64-byte frames, burst 32, each
# busy-polling on its own core. The rate is what the front-end receives back: testpmd's
# per-second Rx-pps, median over the measured seconds after a warm-up.
#
# Prints on stdout, one per line:
#   dpdk_mpps=N        DPDK's round trip (median over --repeat runs)
#   rings_mpps=N       with --rings: `rings loopback --wait poll` at the same frame size and
#                      burst, run alternately with DPDK in the same sitting
# Everything else (per-run figures, load average) goes to stderr.
#
# Usage: scripts/dpdk-baseline.sh [--seconds S] [--warmup S] [--frame-size B] [--burst N]
#                                 [--queue-size N] [--repeat N] [--rings [PATH]]
# Needs dpdk-testpmd (scripts/install-deps.sh); --rings needs the built tool (dotnet build -c Release).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=5
warmup=2
frame_size=64
burst=32
queue_size=256
repeat=1
rings=""
result=""

while [[ $# -gt 0 ]]; do
    case "$1" in
        --seconds) seconds="$2"; shift 2 ;;
        --warmup) warmup="$2"; shift 2 ;;
        --frame-size) frame_size="$2"; shift 2 ;;
        --burst) burst="$2"; shift 2 ;;
        --queue-size) queue_size="$2"; shift 2 ;;
        --repeat) repeat="$2"; shift 2 ;;
        --rings)
            if [[ $# -gt 1 && "$2" != --* ]]; then rings="$2"; shift 2; else rings="src/Apps/Tool/bin/Release/net10.0/rings"; shift; fi ;;
        -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "dpdk-baseline: unknown option $1" >&2; exit 2 ;;
    esac
done

testpmd=$(command -v dpdk-testpmd || true)
[[ -z "$testpmd" && -x /usr/bin/dpdk-testpmd ]] && testpmd=/usr/bin/dpdk-testpmd
[[ -n "$testpmd" ]] || { echo "dpdk-baseline: dpdk-testpmd not found: run scripts/install-deps.sh" >&2; exit 1; }
if [[ -n "$rings" && ! -x "$rings" ]]; then
    echo "dpdk-baseline: the rings tool is not built at $rings (dotnet build Rings.sln -c Release)" >&2
    exit 1
fi

# Two CPUs this process may run on: the back-end forwards on the second, the front-end on the first.
cpus=()
for part in $(sed -n 's/^Cpus_allowed_list:\s*//p' /proc/self/status | tr ',' ' '); do
    if [[ "$part" == *-* ]]; then
        for ((c = ${part%-*}; c <= ${part#*-}; c++)); do cpus+=("$c"); done
    else
        cpus+=("$part")
    fi
done
cpu0=${cpus[0]}
cpu1=${cpus[1]:-${cpus[0]}}
[[ "$cpu0" != "$cpu1" ]] || echo "dpdk-baseline: only one CPU available, both pollers share it" >&2

# testpmd counts the Ethernet FCS in its packet length: 4 more bytes give frames of frame_size.
txpkts=$((frame_size + 4))

work=$(mktemp -d /tmp/dpdk-baseline.XXXXXX)
tag=$$
pids=()
runtime_dir() {
    if [[ $(id -u) -eq 0 ]]; then echo "/var/run/dpdk/$1"; else echo "${XDG_RUNTIME_DIR:-/tmp}/dpdk/$1"; fi
}
cleanup() {
    for pid in "${pids[@]}"; do
        kill -INT "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    pids=()
    rm -rf "$(runtime_dir "rb$tag-vhost")" "$(runtime_dir "rb$tag-virtio")"
}
trap 'cleanup; rm -rf "$work"' EXIT
# A signal ends the script through the EXIT trap (bash runs it on exit, not on a fatal signal).
trap "exit 143" TERM
trap "exit 130" INT

median() {
    sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) { print 0 } else if (NR % 2) { print v[(NR + 1) / 2] } else { print (v[NR / 2] + v[NR / 2 + 1]) / 2 } }'
}

# One DPDK round trip; sets result to its Mpps.
dpdk_run() {
    local sock="$work/vhost.sock"
    rm -f "$sock"
    local common=(--no-huge -m 256 --no-pci -l "$cpu0,$cpu1")
    local app=(--nb-cores=1 --rxq=1 --txq=1 --burst="$burst" --total-num-mbufs=8192 --rxd="$queue_size" --txd="$queue_size")

    # The back-end: stats every 60 s keeps it running (without reading stdin) until SIGINT.
    timeout --kill-after=5 $((seconds + warmup + 60)) "$testpmd" "${common[@]}" --main-lcore="$cpu0" --file-prefix="rb$tag-vhost" \
        --vdev "net_vhost0,iface=$sock,queues=1" -- "${app[@]}" --forward-mode=macswap --stats-period=60 \
        >"$work/vhost.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 200); do [[ -S "$sock" ]] && break; sleep 0.05; done
    [[ -S "$sock" ]] || { echo "dpdk-baseline: testpmd's vhost back-end did not start:" >&2; tail -20 "$work/vhost.log" >&2; return 1; }

    # The front-end prints its port statistics (with Rx-pps over the last second) every second.
    timeout --kill-after=5 $((seconds + warmup + 60)) "$testpmd" "${common[@]}" --main-lcore="$cpu1" --file-prefix="rb$tag-virtio" \
        --vdev "net_virtio_user0,path=$sock,queues=1,queue_size=$queue_size" -- "${app[@]}" --forward-mode=flowgen --txpkts="$txpkts" --stats-period=1 \
        >"$work/virtio.log" 2>&1 &
    pids+=($!)
    sleep $((seconds + warmup + 3))
    cleanup

    # The first sample covers no interval; then skip the warm-up.
    local samples
    samples=$(grep -ao 'Rx-pps: *[0-9]*' "$work/virtio.log" | awk '{ print $2 }' | tail -n +$((warmup + 2)) | head -n "$seconds")
    if [[ -z "$samples" ]] || [[ $(echo "$samples" | median) == 0 ]]; then
        echo "dpdk-baseline: no frames came back; front-end log:" >&2
        tail -30 "$work/virtio.log" >&2
        return 1
    fi
    echo "  dpdk per-second Mpps: $(echo "$samples" | awk '{ printf "%.3f ", $1 / 1e6 }')" >&2
    result=$(echo "$samples" | median | awk '{ printf "%.3f\n", $1 / 1e6 }')
}

# One rings loopback (busy-poll) at the same frame size and burst; sets result to its Mpps.
rings_run() {
    local json="$work/rings.json"
    "$rings" loopback --wait poll --frame-size "$frame_size" --burst "$burst" --queue-size "$queue_size" \
        --seconds "$seconds" --json "$json" >"$work/rings.log" 2>&1 || { echo "dpdk-baseline: rings loopback failed:" >&2; tail -20 "$work/rings.log" >&2; return 1; }
    result=$(sed -n 's/.*"mpps": *\([0-9.eE+-]*\).*/\1/p' "$json" | head -1 | awk '{ printf "%.3f\n", $1 }')
}

dpdk_all=()
rings_all=()
echo "dpdk-baseline: $frame_size-byte frames, burst $burst, queue size $queue_size, ${seconds} s after ${warmup} s warm-up, CPUs $cpu0 and $cpu1, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for ((i = 1; i <= repeat; i++)); do
    dpdk_run || exit 1
    dpdk_all+=("$result")
    echo "  run $i: DPDK testpmd round trip $result Mpps" >&2
    if [[ -n "$rings" ]]; then
        rings_run || exit 1
        rings_all+=("$result")
        echo "  run $i: rings loopback --wait poll $result Mpps" >&2
    fi
done

echo "dpdk_mpps=$(printf '%s\n' "${dpdk_all[@]}" | median)"
if [[ -n "$rings" ]]; then
    echo "rings_mpps=$(printf '%s\n' "${rings_all[@]}" | median)"
fi
