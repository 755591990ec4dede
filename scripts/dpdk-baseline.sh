#!/usr/bin/env bash
# DPDK's own vhost-user round trip on this machine, the yardstick for Rings' busy-poll figures:
# testpmd's net_vhost back-end in macswap mode in one process, testpmd's net_virtio_user
# front-end in flowgen mode in another, 64-byte frames, burst 32, each busy-polling on its own
# core. The rate is what the front-end receives back: testpmd's per-second Rx-pps, median over
# the measured seconds after a warm-up. Without hugepages both testpmds run --no-huge; with them
# (--hugepages on|both) both take 256 MiB of 2 MiB pages from a hugetlbfs mount of the script's
# own (--single-file-segments, which DPDK's virtio-user needs with hugepages) and `rings
# loopback` runs --hugepages on. Hugepages need root: the script reserves 512 pages when fewer
# are, and gives them back at the end.
#
# Prints on stdout, one per line (medians over --repeat runs, every configuration measured in
# each round, so all share one sitting):
#   dpdk_mpps=N        DPDK's round trip, first ring format and page size
#   rings_mpps=N       with --rings: `rings loopback --wait poll --verify sample` (every
#                      frame's sequence checked, its whole content one in 64) with the features
#                      DPDK's pair negotiates (IN_ORDER on, EVENT_IDX off), at the same frame size and
#                      burst, run alternately with DPDK; its steady rate (the median of its
#                      per-second rates after the first), taken as DPDK's is
#   dpdk_RING_PAGES_mpps=N, rings_RING_PAGES_mpps=N
#                      each configuration (RING split or packed, PAGES 4k or 2m)
#   ratio_RING_PAGES=N with --rings: the ratio of the two medians
#   pair_ratio_RING_PAGES=N
#                      with --rings: the median of each round's own ratio (its Rings run over
#                      the DPDK run next to it, the two run in turn first); the machine's speed
#                      drifts over minutes, and a pair shares more of one phase than the medians do
# Everything else (per-run figures, a table with ratios, load average) goes to stderr.
#
# Usage: scripts/dpdk-baseline.sh [--seconds S] [--warmup S] [--frame-size B] [--burst N]
#                                 [--queue-size N] [--repeat N] [--rings [PATH]]
#                                 [--ring split|packed|both] [--hugepages off|on|both]
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
ring_choice=split
huge_choice=off

while [[ $# -gt 0 ]]; do
    case "$1" in
        --seconds) seconds="$2"; shift 2 ;;
        --warmup) warmup="$2"; shift 2 ;;
        --frame-size) frame_size="$2"; shift 2 ;;
        --burst) burst="$2"; shift 2 ;;
        --queue-size) queue_size="$2"; shift 2 ;;
        --repeat) repeat="$2"; shift 2 ;;
        --ring) ring_choice="$2"; shift 2 ;;
        --hugepages) huge_choice="$2"; shift 2 ;;
        --rings)
            if [[ $# -gt 1 && "$2" != --* ]]; then rings="$2"; shift 2; else rings="src/Apps/Tool/bin/Release/net10.0/rings"; shift; fi ;;
        -h|--help) sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "dpdk-baseline: unknown option $1" >&2; exit 2 ;;
    esac
done

case "$ring_choice" in split|packed) ring_list=("$ring_choice") ;; both) ring_list=(split packed) ;; *) echo "dpdk-baseline: --ring must be split, packed or both" >&2; exit 2 ;; esac
case "$huge_choice" in off) page_list=(4k) ;; on) page_list=(2m) ;; both) page_list=(4k 2m) ;; *) echo "dpdk-baseline: --hugepages must be off, on or both" >&2; exit 2 ;; esac

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
huge_dir=""
hugepages_before=""
# testpmd leaves its memory files behind; removing them gives their pages back.
clear_huge_dir() {
    if [[ -n "$huge_dir" ]]; then
        find "$huge_dir" -mindepth 1 -maxdepth 1 -type f -delete 2>/dev/null || true
    fi
}
release_hugepages() {
    if [[ -n "$huge_dir" ]]; then
        clear_huge_dir
        umount "$huge_dir" 2>/dev/null || umount -l "$huge_dir" 2>/dev/null || true
        huge_dir=""
    fi
    if [[ -n "$hugepages_before" ]]; then
        echo "$hugepages_before" > /proc/sys/vm/nr_hugepages 2>/dev/null || true
        hugepages_before=""
    fi
}
trap 'cleanup; release_hugepages; rm -rf "$work"' EXIT
# A signal ends the script through the EXIT trap (bash runs it on exit, not on a fatal signal).
trap "exit 143" TERM
trap "exit 130" INT

median() {
    sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) { print 0 } else if (NR % 2) { print v[(NR + 1) / 2] } else { print (v[NR / 2] + v[NR / 2 + 1]) / 2 } }'
}

# Hugepages for the runs that use them: 512 reserved (two testpmds of 256 MiB, and rings' 64 MiB)
# and a hugetlbfs mount of our own for testpmd's memory files.
if [[ " ${page_list[*]} " == *" 2m "* ]]; then
    [[ $(id -u) -eq 0 ]] || { echo "dpdk-baseline: --hugepages needs root (to reserve and mount hugepages)" >&2; exit 1; }
    current=$(cat /proc/sys/vm/nr_hugepages)
    if (( current < 512 )); then
        hugepages_before=$current
        echo 512 > /proc/sys/vm/nr_hugepages
        (( $(cat /proc/sys/vm/nr_hugepages) >= 512 )) || { echo "dpdk-baseline: could not reserve 512 hugepages of 2 MiB" >&2; exit 1; }
    fi
    huge_dir="$work/huge"
    mkdir -p "$huge_dir"
    mount -t hugetlbfs -o pagesize=2M nodev "$huge_dir" || { huge_dir=""; echo "dpdk-baseline: cannot mount hugetlbfs" >&2; exit 1; }
fi

# One DPDK round trip (ring format $1, pages $2: 4k or 2m); sets result to its Mpps.
dpdk_run() {
    local ring=$1 pages=$2
    local sock="$work/vhost.sock"
    rm -f "$sock"
    clear_huge_dir
    local memory=(--no-huge -m 256)
    [[ "$pages" == 2m ]] && memory=(--huge-dir "$huge_dir" --single-file-segments -m 256)
    local packed=0
    [[ "$ring" == packed ]] && packed=1
    local common=("${memory[@]}" --no-pci -l "$cpu0,$cpu1")
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
        --vdev "net_virtio_user0,path=$sock,queues=1,queue_size=$queue_size,packed_vq=$packed" -- "${app[@]}" --forward-mode=flowgen --txpkts="$txpkts" --stats-period=1 \
        >"$work/virtio.log" 2>&1 &
    pids+=($!)
    sleep $((seconds + warmup + 3))
    cleanup
    clear_huge_dir

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

# One rings loopback (busy-poll) at the same frame size and burst (ring format $1, pages $2); sets result to its Mpps.
rings_run() {
    local ring=$1 pages=$2
    local json="$work/rings.json"
    local huge=off
    [[ "$pages" == 2m ]] && huge=on
    "$rings" loopback --wait poll --verify sample --in-order on --event-idx off --ring "$ring" --hugepages "$huge" --frame-size "$frame_size" --burst "$burst" --queue-size "$queue_size" \
        --seconds "$seconds" --json "$json" >"$work/rings.log" 2>&1 || { echo "dpdk-baseline: rings loopback failed:" >&2; tail -20 "$work/rings.log" >&2; return 1; }
    # The steady rate (median of the per-second rates after the first), taken as DPDK's is; the
    # whole run's rate when the run was too short to have one.
    result=$(sed -n 's/.*"steady_mpps": *\([0-9.eE+-]*\).*/\1/p' "$json" | head -1 | awk '{ printf "%.3f\n", $1 }')
    [[ -n "$result" ]] || result=$(sed -n 's/.*"mpps": *\([0-9.eE+-]*\).*/\1/p' "$json" | head -1 | awk '{ printf "%.3f\n", $1 }')
}

declare -A dpdk_all rings_all
configs=()
for r in "${ring_list[@]}"; do for p in "${page_list[@]}"; do configs+=("${r}_$p"); done; done
echo "dpdk-baseline: $frame_size-byte frames, burst $burst, queue size $queue_size, ${seconds} s after ${warmup} s warm-up, CPUs $cpu0 and $cpu1 ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)), load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
one_dpdk() {
    dpdk_run "$1" "$2" || exit 1
    dpdk_all[$3]+="$result "
    dpdk_now=$result
    echo "  run $i $1 $2: DPDK testpmd round trip $result Mpps" >&2
}
one_rings() {
    rings_run "$1" "$2" || exit 1
    rings_all[$3]+="$result "
    rings_now=$result
    echo "  run $i $1 $2: rings loopback --wait poll $result Mpps" >&2
}
declare -A pair_all
for ((i = 1; i <= repeat; i++)); do
    for c in "${configs[@]}"; do
        r=${c%_*} p=${c#*_}
        if [[ -z "$rings" ]]; then
            one_dpdk "$r" "$p" "$c"
            continue
        fi

        # The pair's order alternates from round to round, so neither side always runs in the
        # second half of a sitting whose speed drifts; the pair's own ratio is kept beside the medians.
        if ((i % 2)); then one_dpdk "$r" "$p" "$c"; one_rings "$r" "$p" "$c"; else one_rings "$r" "$p" "$c"; one_dpdk "$r" "$p" "$c"; fi
        pair_all[$c]+="$(awk -v a="$rings_now" -v b="$dpdk_now" 'BEGIN { if (b > 0) printf "%.4f", a / b; else print 0 }') "
    done
done

med() { tr ' ' '\n' <<<"$1" | sed '/^$/d' | median; }
first=${configs[0]}
echo "dpdk_mpps=$(med "${dpdk_all[$first]}")"
[[ -n "$rings" ]] && echo "rings_mpps=$(med "${rings_all[$first]}")"
printf '  %-8s %-6s %12s %12s %8s %11s\n' ring pages "DPDK Mpps" "Rings Mpps" ratio "pair ratios" >&2
for c in "${configs[@]}"; do
    d=$(med "${dpdk_all[$c]}")
    echo "dpdk_${c}_mpps=$d"
    if [[ -n "$rings" ]]; then
        g=$(med "${rings_all[$c]}")
        q=$(med "${pair_all[$c]}")
        echo "rings_${c}_mpps=$g"
        echo "ratio_${c}=$(awk -v a="$g" -v b="$d" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print 0 }')"
        echo "pair_ratio_${c}=$(awk -v q="$q" 'BEGIN { printf "%.3f", q }')"
        printf '  %-8s %-6s %12s %12s %8s %11s\n' "${c%_*}" "${c#*_}" "$d" "$g" "$(awk -v a="$g" -v b="$d" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "n/a" }')" \
            "$(awk -v q="$q" 'BEGIN { printf "%.2fx", q }') ($(tr ' ' '\n' <<<"${pair_all[$c]}" | sed '/^$/d' | awk '{ printf "%s%.2f", (NR > 1 ? " " : ""), $1 }'))" >&2
    else
        printf '  %-8s %-6s %12s %12s %8s %11s\n' "${c%_*}" "${c#*_}" "$d" - - - >&2
    fi
done
