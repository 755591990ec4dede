#!/usr/bin/env bash
# Two `rings guest` processes joined by `rings switch` (two vhost-user ports, learning switch)
# against the same two guests joined by `rings host --mode patch`, in interleaved rounds of one
# sitting: each round runs patch, then switch. Prints every round, the medians of the summed
# receive rates of both guests, and the ratio switch / patch.
#
#   scripts/switch-vs-patch.sh [--rounds N] [--seconds S] [--frame-size B] [--burst N] [--wait poll|adaptive|block] [--processor switch|patch|reflect]
#
# Build first: dotnet build Rings.sln -c Release
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=3 seconds=5 frame=64 burst=32 wait=poll processor=switch
while [[ $# -gt 0 ]]; do
    case "$1" in
        --rounds) rounds=$2; shift 2 ;;
        --seconds) seconds=$2; shift 2 ;;
        --frame-size) frame=$2; shift 2 ;;
        --burst) burst=$2; shift 2 ;;
        --wait) wait=$2; shift 2 ;;
        --processor) processor=$2; shift 2 ;;
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
# A signal ends the script through the EXIT trap (bash runs it on exit, not on a fatal signal).
trap "exit 143" TERM
trap "exit 130" INT

wait_for() { for _ in $(seq 300); do [[ -S $1 ]] && return 0; sleep 0.05; done; echo "no socket $1" >&2; exit 1; }

# Runs both guests against sockets $1 and $2 and prints the sum of their receive rates (Mpps);
# fails (jq finds no file) when a guest wrote no figures.
guests() {
    local common=(--seconds "$seconds" --frame-size "$frame" --burst "$burst" --wait "$wait")
    "$rings" guest --socket "$1" "${common[@]}" --json "$dir/a.json" > "$dir/a.log" 2>&1 &
    local a=$!
    "$rings" guest --socket "$2" "${common[@]}" --json "$dir/b.json" > "$dir/b.log" 2>&1 || true
    wait "$a" || true
    jq -s '(.[0].mpps + .[1].mpps)' "$dir/a.json" "$dir/b.json"
}

stop_server() { kill -TERM "$server"; wait "$server" || true; server=; }

patch=() switch=()
printf '%-6s %12s %12s\n' round "patch Mpps" "switch Mpps"
for r in $(seq "$rounds"); do
    # No figure of an earlier round may stand in for a run whose guest wrote none.
    rm -f "$dir"/*.sock "$dir"/*.json
    "$rings" host --socket "$dir/h.sock" --mode patch --wait "$wait" --burst "$burst" --quiet > "$dir/host.log" 2>&1 &
    server=$!
    wait_for "$dir/h.sock"
    p=$(guests "$dir/h.sock" "$dir/h.sock")
    stop_server

    "$rings" switch --port "vhost-user:$dir/a.sock" --port "vhost-user:$dir/b.sock" --processor "$processor" --wait "$wait" --burst "$burst" --quiet > "$dir/switch.log" 2>&1 &
    server=$!
    wait_for "$dir/a.sock"
    wait_for "$dir/b.sock"
    s=$(guests "$dir/a.sock" "$dir/b.sock")
    stop_server

    patch+=("$p") switch+=("$s")
    printf '%-6s %12.3f %12.3f\n' "$r" "$p" "$s"
done

median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }
mp=$(median "${patch[@]}") ms=$(median "${switch[@]}")
printf '%-6s %12.3f %12.3f\n' median "$mp" "$ms"
awk -v s="$ms" -v p="$mp" 'BEGIN { printf "ratio switch / patch: %.3f\n", s / p }'
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) CPUs; frames ${frame} B, burst ${burst}, wait ${wait}, ${seconds} s per run, processor ${processor}"
