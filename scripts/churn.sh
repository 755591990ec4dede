#!/usr/bin/env bash
# Churn: one `rings host` serves good and hostile front-ends that come and go for a while, and
# the host's open descriptors, threads and resident memory are sampled at a fixed interval. A
# host that leaks shows a slope; one that a hostile front-end can hurt shows a good guest that
# lost, duplicated or corrupted a frame, or a host that died.
#
# Each cycle starts together: a good `rings guest` (paced, numbered frames, every one checked), a
# hostile front-end from the test peer (scribble, loop, outside, flood, disconnect, malformed in
# turn) and a connection that never sends a byte; then waits for all three.
#
#   scripts/churn.sh [--minutes M] [--interval S] [--guest-seconds S] [--rate N]
#
# Prints one line per sample, then the slope of each figure per minute by least squares over the
# whole run and over its second half (after warm-up), and the good guests' totals. Exit 0 when
# every good guest was clean and the host lived to the end. Build first: dotnet build Rings.sln -c Release
set -euo pipefail
cd "$(dirname "$0")/.."

minutes=15 interval=30 guest_seconds=2 rate=100000
while [[ $# -gt 0 ]]; do
    case "$1" in
        --minutes) minutes=$2; shift 2 ;;
        --interval) interval=$2; shift 2 ;;
        --guest-seconds) guest_seconds=$2; shift 2 ;;
        --rate) rate=$2; shift 2 ;;
        -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

rings=${RINGS:-src/Apps/Tool/bin/Release/net10.0/rings}
peer=${RINGS_TEST_PEER:-src/Apps/Testing/Peer/bin/Release/net10.0/Rings.TestPeer}
for x in "$rings" "$peer"; do [[ -x $x ]] || { echo "build first: $x is missing" >&2; exit 2; }; done
command -v socat > /dev/null || { echo "socat is needed for the silent connections (apt-get install socat)" >&2; exit 2; }

dir=$(mktemp -d)
host=
cleanup() {
    if [[ -n $host ]] && kill -0 "$host" 2> /dev/null; then kill -TERM "$host"; wait "$host" || true; fi
    rm -rf "$dir"
}
trap cleanup EXIT
# A signal ends the script through the EXIT trap (bash runs it on exit, not on a fatal signal).
trap "exit 143" TERM
trap "exit 130" INT

socket=$dir/h.sock
"$rings" host --socket "$socket" --wait adaptive --quiet > "$dir/host.log" 2>&1 &
host=$!
for _ in $(seq 300); do [[ -S $socket ]] && break; sleep 0.05; done
[[ -S $socket ]] || { echo "rings host did not start:" >&2; cat "$dir/host.log" >&2; exit 1; }

kinds=(scribble loop outside flood disconnect malformed)
sample() {
    local t=$1
    local fds threads rss
    fds=$(find "/proc/$host/fd" -mindepth 1 -maxdepth 1 | wc -l)
    threads=$(awk '/^Threads:/ {print $2}' "/proc/$host/status")
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$host/status")
    printf '%8.1f %6d %8d %10d %8d %8d\n' "$t" "$fds" "$threads" "$rss" "$cycles" "$bad_guests" | tee -a "$dir/samples"
}

cycles=0 bad_guests=0 frames=0 lost=0 duplicated=0 corrupted=0
start=$(date +%s.%N)
end=$(awk -v s="$start" -v m="$minutes" 'BEGIN { printf "%.3f", s + m * 60 }')
next_sample=$start
printf '%8s %6s %8s %10s %8s %8s\n' seconds fds threads "rss KiB" cycles "bad runs"
while :; do
    now=$(date +%s.%N)
    if awk -v n="$now" -v t="$next_sample" 'BEGIN { exit !(n >= t) }'; then
        sample "$(awk -v n="$now" -v s="$start" 'BEGIN { printf "%.3f", n - s }')"
        next_sample=$(awk -v t="$next_sample" -v i="$interval" 'BEGIN { printf "%.3f", t + i }')
    fi
    awk -v n="$now" -v e="$end" 'BEGIN { exit !(n >= e) }' && break
    kill -0 "$host" 2> /dev/null || { echo "rings host died:" >&2; tail -20 "$dir/host.log" >&2; exit 1; }

    kind=${kinds[$((cycles % ${#kinds[@]}))]}
    rm -f "$dir/guest.json"
    "$rings" guest --socket "$socket" --seconds "$guest_seconds" --rate "$rate" --wait adaptive --json "$dir/guest.json" > "$dir/guest.log" 2>&1 &
    good=$!
    "$peer" guest --socket "$socket" --misbehave "$kind" > "$dir/hostile.log" 2>&1 &
    hostile=$!
    timeout "$((guest_seconds + 3))" socat -u "UNIX-CONNECT:$socket" - > /dev/null 2>&1 < /dev/null &
    silent=$!
    good_exit=0; wait "$good" || good_exit=$?
    wait "$hostile" || true
    wait "$silent" || true
    cycles=$((cycles + 1))
    if [[ $good_exit -ne 0 || ! -s $dir/guest.json ]]; then
        bad_guests=$((bad_guests + 1))
        echo "cycle $cycles (beside '$kind'): rings guest exited $good_exit" >&2
        tail -5 "$dir/guest.log" >&2
        continue
    fi
    read -r f l d c < <(jq -r '"\(.frames_received) \(.lost) \(.duplicated) \(.corrupted)"' "$dir/guest.json")
    frames=$((frames + f)) lost=$((lost + l)) duplicated=$((duplicated + d)) corrupted=$((corrupted + c))
    if [[ $((l + d + c)) -ne 0 ]]; then
        bad_guests=$((bad_guests + 1))
        echo "cycle $cycles (beside '$kind'): lost $l, duplicated $d, corrupted $c" >&2
    fi
done

# Least-squares slope per minute of a column, over the samples from time $2 on.
slope() {
    awk -v col="$1" -v from="$2" '$1 >= from { n++; x = $1 / 60; y = $col; sx += x; sy += y; sxx += x * x; sxy += x * y }
        END { d = n * sxx - sx * sx; if (n < 2 || d == 0) print "n/a"; else printf "%.2f", (n * sxy - sx * sy) / d }' "$dir/samples"
}
half=$(awk -v m="$minutes" 'BEGIN { print m * 30 }')
echo
echo "slope per minute, whole run:  fds $(slope 2 0), threads $(slope 3 0), rss $(slope 4 0) KiB"
echo "slope per minute, second half: fds $(slope 2 "$half"), threads $(slope 3 "$half"), rss $(slope 4 "$half") KiB"
echo "cycles $cycles; good guests: $frames frames received, lost $lost, duplicated $duplicated, corrupted $corrupted; bad runs $bad_guests"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) CPUs"
[[ $bad_guests -eq 0 ]]
