#!/usr/bin/env bash
# `rings switch` with one multiqueue vhost-user port per side, each driven by a `rings guest
# --queues N`, served by one worker and then by two (the ports' queue pairs spread over them),
# in interleaved rounds of one sitting. Prints every round, the medians of the summed receive
# rates of both guests, and the ratio two workers / one.
#
#   scripts/switch-workers.sh [--rounds N] [--seconds S] [--queues N] [--frame-size B] [--burst N] [--wait poll|adaptive|block]
#
# Build first: dotnet build Rings.sln -c Release
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=3 seconds=5 queues=2 frame=64 burst=32 wait=poll
while [[ $# -gt 0 ]]; do
    case "$1" in
        --rounds) rounds=$2; shift 2 ;;
        --seconds) seconds=$2; shift 2 ;;
        --queues) queues=$2; shift 2 ;;
        --frame-size) frame=$2; shift 2 ;;
        --burst) burst=$2; shift 2 ;;
        --wait) wait=$2; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

rings=${RINGS:-src/Apps/Tool/bin/Release/net10.0/rings}
[[ -x $rings ]] || { echo "build first: $rings is missing" >&2; exit 2; }
dir=$(mktemp -d)
server=
cleanup() {
    if [[ -n $server ]] && kill -0 "$server" 2>/dev/null; then kill -TERM "$server"; wait "$server" || true; fi
    rm -rf "$dir"
}
trap cleanup EXIT
trap "exit 143" TERM
trap "exit 130" INT

wait_for() { for _ in $(seq 300); do [[ -S $1 ]] && return 0; sleep 0.05; done; echo "no socket $1" >&2; exit 1; }

# Both guests against the switch's two sockets; prints the sum of their receive rates (Mpps).
guests() {
    local common=(--queues "$queues" --seconds "$seconds" --frame-size "$frame" --burst "$burst" --wait "$wait")
    "$rings" guest --socket "$dir/a.sock" "${common[@]}" --json "$dir/a.json" > "$dir/a.log" 2>&1 &
    local a=$!
    "$rings" guest --socket "$dir/b.sock" "${common[@]}" --json "$dir/b.json" > "$dir/b.log" 2>&1 || true
    wait "$a" || true
    jq -s '(.[0].mpps + .[1].mpps)' "$dir/a.json" "$dir/b.json"
}

run_switch() {
    rm -f "$dir"/*.sock "$dir"/*.json
    "$rings" switch --port "vhost-user:$dir/a.sock,queues=$queues" --port "vhost-user:$dir/b.sock,queues=$queues" --workers "$1" --wait "$wait" --burst "$burst" --quiet > "$dir/switch.log" 2>&1 &
    server=$!
    wait_for "$dir/a.sock"
    wait_for "$dir/b.sock"
    guests
    kill -TERM "$server"; wait "$server" || true; server=
}

one=() two=()
printf '%-6s %14s %14s\n' round "1 worker Mpps" "2 workers Mpps"
for r in $(seq "$rounds"); do
    o=$(run_switch 1)
    t=$(run_switch 2)
    one+=("$o") two+=("$t")
    printf '%-6s %14.3f %14.3f\n' "$r" "$o" "$t"
done

median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }
m1=$(median "${one[@]}") m2=$(median "${two[@]}")
printf '%-6s %14.3f %14.3f\n' median "$m1" "$m2"
awk -v a="$m2" -v b="$m1" 'BEGIN { printf "ratio 2 workers / 1: %.3f\n", a / b }'
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) CPUs; ${queues} queue pairs per port, frames ${frame} B, burst ${burst}, wait ${wait}, ${seconds} s per run"
