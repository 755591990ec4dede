#!/usr/bin/env bash
# TCP between two network namespaces joined by `rings switch` (two TAP ports, learning switch)
# against the same two namespaces joined by a Linux bridge (veth pairs), in interleaved rounds
# of one sitting: each round runs the bridge, then the switch. iperf3 measures one TCP stream
# from the first namespace to the second. Prints every round, the medians and the ratio
# switch / bridge. Addresses come from 169.254.0.0/16 and exist only in the namespaces made
# here, which are removed at the end (also on failure). Needs root and iperf3 (apt-get install iperf3).
#
#   scripts/switch-vs-bridge.sh [--rounds N] [--seconds S] [--wait poll|adaptive|block] [--burst N] [--cpus LIST] [--offload on|off]
#
# --offload on opens the TAP ports with offload=on (the kernel hands over 64 KiB TCP frames with
# partial checksums, which pass through to the other TAP device as they are).
#
# Build first: dotnet build Rings.sln -c Release
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=3 seconds=10 wait=adaptive burst=32 cpus= offload=off
while [[ $# -gt 0 ]]; do
    case "$1" in
        --rounds) rounds=$2; shift 2 ;;
        --seconds) seconds=$2; shift 2 ;;
        --wait) wait=$2; shift 2 ;;
        --burst) burst=$2; shift 2 ;;
        --cpus) cpus=$2; shift 2 ;;
        --offload) offload=$2; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

rings=${RINGS:-src/Apps/Tool/bin/Release/net10.0/rings}
[[ -x $rings ]] || { echo "build first: $rings is missing" >&2; exit 2; }
command -v iperf3 >/dev/null || { echo "iperf3 is missing: apt-get install iperf3" >&2; exit 2; }
[[ $(id -u) -eq 0 ]] || { echo "run as root (network namespaces, TAP devices)" >&2; exit 2; }

tag=$(head -c 3 /dev/urandom | od -An -tx1 | tr -d ' \n')
subnet=$(( $(od -An -tu1 -N1 /dev/urandom) % 254 + 1 ))
a=rsb-a-$tag b=rsb-b-$tag
ipa=169.254.$subnet.1 ipb=169.254.$subnet.2
# The rounds run in this shell, not in $(...): a failing step stops the script (errexit), and the
# trap sees the switch and the iperf3 listener to stop them.
server= listener= result=
cleanup() {
    if [[ -n $server ]] && kill -0 "$server" 2>/dev/null; then kill -TERM "$server"; wait "$server" || true; fi
    if [[ -n $listener ]] && kill -0 "$listener" 2>/dev/null; then kill -TERM "$listener"; wait "$listener" || true; fi
    ip netns del "$a" 2>/dev/null || true
    ip netns del "$b" 2>/dev/null || true
    ip link del "rsbr$tag" 2>/dev/null || true
}
trap cleanup EXIT
# A signal ends the script through the EXIT trap (bash runs it on exit, not on a fatal signal).
trap "exit 143" TERM
trap "exit 130" INT

namespaces() {
    for ns in "$a" "$b"; do
        ip netns add "$ns"
        ip netns exec "$ns" sh -c 'echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6; echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6'
        ip -n "$ns" link set lo up
    done
}

# Puts device $1 into namespace $2 with address $3.
place() {
    ip link set "$1" netns "$2"
    ip -n "$2" addr add "$3/24" dev "$1"
    ip -n "$2" link set "$1" up
}

# One iperf3 run from a to b; sets result to the Gbit/s received.
measure() {
    ip netns exec "$b" iperf3 -s -1 -B "$ipb" >/dev/null 2>&1 &
    listener=$!
    for _ in $(seq 100); do ip netns exec "$b" ss -ltn | grep -q ":5201" && break; sleep 0.05; done
    result=$(ip netns exec "$a" iperf3 -c "$ipb" -t "$seconds" -J | python3 -c 'import json,sys; print("%.3f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e9))')
    wait "$listener" || true
    listener=
}

bridge_round() {
    namespaces
    ip link add "rsbr$tag" type bridge
    ip link set "rsbr$tag" up
    ip link add "rsva$tag" type veth peer name "rsvA$tag"
    ip link add "rsvb$tag" type veth peer name "rsvB$tag"
    for v in "rsvA$tag" "rsvB$tag"; do ip link set "$v" master "rsbr$tag" up; done
    place "rsva$tag" "$a" "$ipa"
    place "rsvb$tag" "$b" "$ipb"
    measure
    ip netns del "$a"; ip netns del "$b"; ip link del "rsbr$tag"
}

switch_round() {
    namespaces
    local args=(switch --port "tap:rsta$tag,offload=$offload" --port "tap:rstb$tag,offload=$offload" --workers 1 --wait "$wait" --burst "$burst" --quiet)
    [[ -n $cpus ]] && args+=(--cpus "$cpus")
    "$rings" "${args[@]}" > "/tmp/rsb-switch-$tag.log" 2>&1 &
    server=$!
    for _ in $(seq 300); do ip link show "rstb$tag" >/dev/null 2>&1 && break; sleep 0.05; done
    place "rsta$tag" "$a" "$ipa"
    place "rstb$tag" "$b" "$ipb"
    measure
    kill -TERM "$server"; wait "$server" || true; server=
    ip netns del "$a"; ip netns del "$b"
}

echo "CPU: $(lscpu | sed -n 's/^Model name: *//p') ($(nproc) CPUs); kernel $(uname -r); load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "iperf3 -c $ipb -t $seconds, one TCP stream; rings switch --workers 1 --wait $wait --burst $burst${cpus:+ --cpus $cpus}, TAP ports offload=$offload"
bridge=() switched=()
for r in $(seq "$rounds"); do
    bridge_round; g=$result; bridge+=("$g")
    switch_round; s=$result; switched+=("$s")
    echo "round $r: bridge $g Gbit/s, rings switch $s Gbit/s"
done
tail -8 "/tmp/rsb-switch-$tag.log"; rm -f "/tmp/rsb-switch-$tag.log"
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }
mb=$(median "${bridge[@]}") ms=$(median "${switched[@]}")
echo "median: bridge $mb Gbit/s, rings switch $ms Gbit/s, ratio switch/bridge $(awk -v s="$ms" -v b="$mb" 'BEGIN {printf "%.3f", s / b}')"
