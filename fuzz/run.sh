#!/usr/bin/env bash
# Builds, instruments and runs one fuzz target under AFL++ for a given time, then reports
# executions, coverage and crashes. Every crash found is copied to fuzz/regressions/TARGET/, where
# the test suite replays it (tests/Fuzz).
#
#   fuzz/run.sh TARGET SECONDS
#   fuzz/run.sh --list
#
# Environment: AFL_TIMEOUT_MS (per-input timeout, default 5000), FUZZ_IN_PROCESS=1 (run inputs in the
# fork-server process itself: faster, but a memory fault ends the run instead of being recorded),
# FUZZ_EXECS=N (stop after about N executions, or at SECONDS, whichever comes first), FUZZ_CORPUS=DIR
# (start from these seeds instead of corpus/TARGET, e.g. only the IN_ORDER ones of split-ops).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"

# name | status | what it covers
targets=(
    "split-chain|ready|split device-side chain walking over guarded memory"
    "packed-chain|ready|packed device-side chain walking over guarded memory"
    "split-ops|ready|driver and device operations with memory corruption, against a FIFO model"
    "vhost-user|ready|vhost-user message decoder and back-end state machine over random message sequences"
    "net-rx|ready|virtio-net receive path and MRG_RXBUF reassembly against a hostile device"
    "forward|ready|the runtime's forwarding path: hostile guests behind vhost-user ports, learning switch, in-memory port"
)

usage() {
    echo "usage: $0 TARGET SECONDS | --list" >&2
    printf '  %s\n' "${targets[@]}" | tr '|' '\t' >&2
    exit 2
}

if [[ "${1:-}" == "--list" ]]; then
    printf '%s\n' "${targets[@]}" | tr '|' '\t'
    exit 0
fi
[[ $# -eq 2 && "$2" =~ ^[0-9]+$ ]] || usage
target="$1"
seconds="$2"
status=""
for t in "${targets[@]}"; do
    IFS='|' read -r name st _ <<<"$t"
    [[ "$name" == "$target" ]] && status="$st"
done
[[ -n "$status" ]] || { echo "unknown target: $target" >&2; usage; }
if [[ "$status" != "ready" ]]; then
    echo "$target is pending: the code it covers is not there yet" >&2
    exit 2
fi
corpus="${FUZZ_CORPUS:-$here/corpus/$target}"
[[ -d "$corpus" && -n "$(ls -A "$corpus")" ]] || { echo "no seed corpus in $corpus" >&2; exit 1; }

export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1

if ! command -v afl-fuzz >/dev/null; then
    echo "== installing afl++"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y afl++
fi

out="$here/out/$target"   # one folder per target, so runs of different targets do not meet
bin="$out/bin"
findings="$out/findings"
echo "== building"
rm -rf "$bin"
dotnet build "$here/Rings.Fuzz/Rings.Fuzz.csproj" -c Release -o "$bin" -nologo -v quiet
rm -rf "$out/plain"
cp -r "$bin" "$out/plain"   # an uninstrumented copy, to replay what was found

echo "== instrumenting Rings.dll and Rings.Linux.dll"
dotnet tool restore >/dev/null
for dll in Rings.dll Rings.Linux.dll; do
    dotnet tool run sharpfuzz "$bin/$dll"
done

mode=()
[[ "${FUZZ_IN_PROCESS:-0}" == "1" ]] && mode=(--in-process)
budget=()
[[ -n "${FUZZ_EXECS:-}" ]] && budget=(-E "$FUZZ_EXECS")
rm -rf "$findings"
mkdir -p "$findings"
echo "== fuzzing $target for ${seconds}s"
# No CPU frequency tuning or core binding on a shared machine; dotnet itself is not an AFL binary.
AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_SKIP_BIN_CHECK=1 AFL_NO_AFFINITY=1 AFL_NO_UI=1 \
    afl-fuzz -V "$seconds" "${budget[@]}" -t "${AFL_TIMEOUT_MS:-5000}" -m none -i "$corpus" -o "$findings" \
    -- dotnet "$bin/Rings.Fuzz.dll" "$target" "${mode[@]}" >"$findings/afl.log" 2>&1 || {
        echo "afl-fuzz failed; the end of its log:" >&2
        tail -30 "$findings/afl.log" >&2
        exit 1
    }

stats="$findings/default/fuzzer_stats"
stat() { sed -n "s/^$1 *: *//p" "$stats" | head -1; }
crashes_dir="$findings/default/crashes"
regressions="$here/regressions/$target"
copied=0
new_inputs=()
shopt -s nullglob
for f in "$crashes_dir"/id:*; do
    mkdir -p "$regressions"
    name="crash-$(sha1sum "$f" | cut -c1-16)"
    if [[ ! -e "$regressions/$name" ]]; then
        cp "$f" "$regressions/$name"
        new_inputs+=("$regressions/$name")
        copied=$((copied + 1))
    fi
done

echo "== $target: ${seconds}s at most"
echo "wall time:    $(stat run_time)s"
echo "executions:   $(stat execs_done) ($(stat execs_per_sec)/s)"
echo "edges:        $(stat edges_found) of $(stat total_edges) (bitmap coverage $(stat bitmap_cvg))"
echo "corpus:       $(stat corpus_count) inputs"
echo "crashes:      $(stat saved_crashes) saved ($copied new regression inputs in fuzz/regressions/$target)"
echo "hangs:        $(stat saved_hangs)"
if (( copied > 0 )); then
    echo "== replaying the new regression inputs (uninstrumented)"
    for f in "${new_inputs[@]}"; do
        set +e
        dotnet "$out/plain/Rings.Fuzz.dll" "$target" --replay "$f" >"$out/replay.log" 2>&1
        rc=$?
        set -e
        grep -v ' passed, ' "$out/replay.log" | head -8
        if (( rc > 128 )); then
            echo "FAIL $f: the process died of signal $((rc - 128)) (a memory fault is SIGSEGV, 11)"
        fi
    done
fi
