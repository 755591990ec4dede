#!/usr/bin/env bash
# Runs every test of Rings: installs what the tests need (Debian packages such as DPDK's
# testpmd when run as root), reserves the 2 MiB hugepages the hugepage tests need (as root;
# RINGS_TEST_HUGEPAGES pages, 512 = 1 GiB by default, the previous reservation restored at the
# end, also on failure), restores, builds, runs the whole suite, and ends with one line:
# "N passed, N failed, N skipped".
set -uo pipefail
cd "$(dirname "$0")/.."

if [[ -x scripts/install-deps.sh ]]; then
    scripts/install-deps.sh || { echo "installing test dependencies failed" >&2; echo "0 passed, 1 failed"; exit 1; }
fi

export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1

results=$(mktemp -d)
nr_hugepages=/proc/sys/vm/nr_hugepages
hugepages_before=""
restore_hugepages() {
    if [[ -n "$hugepages_before" ]]; then
        echo "$hugepages_before" > "$nr_hugepages" 2>/dev/null || echo "could not restore $nr_hugepages to $hugepages_before" >&2
    fi
}
trap 'restore_hugepages; rm -rf "$results"' EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

# The hugepage tests (DPDK testpmd with -m 256, rings guests of a few MiB, one at a time) need
# 2 MiB pages reserved. Without them they fail and say so; they never skip.
want_hugepages=${RINGS_TEST_HUGEPAGES:-512}
if [[ -w "$nr_hugepages" ]]; then
    hugepages_before=$(cat "$nr_hugepages")
    if (( hugepages_before < want_hugepages )); then
        echo "$want_hugepages" > "$nr_hugepages" 2>/dev/null || true
        got=$(cat "$nr_hugepages")
        (( got >= want_hugepages )) || echo "reserved only $got of $want_hugepages 2 MiB hugepages (memory too fragmented?): the hugepage tests will fail" >&2
    fi
else
    echo "cannot reserve hugepages ($nr_hugepages is not writable: not root?); the hugepage tests will fail unless $want_hugepages are reserved" >&2
fi

if ! dotnet build Rings.sln -c Release -nologo -v quiet; then
    echo "build failed" >&2
    echo "0 passed, 1 failed"
    exit 1
fi

dotnet test tests/Rings.Tests.csproj -c Release --no-build -nologo \
    --logger "trx;LogFileName=tests.trx" --results-directory "$results" \
    --logger "console;verbosity=normal" "$@"
status=$?

passed=0 failed=0 skipped=0
if [[ -f "$results/tests.trx" ]]; then
    counters=$(grep -o '<Counters [^>]*>' "$results/tests.trx" | head -1)
    get() { sed -n "s/.* $1=\"\([0-9]*\)\".*/\1/p" <<<"$counters"; }
    passed=$(get passed); failed=$(get failed)
    total=$(get total); executed=$(get executed)
    skipped=$(( ${total:-0} - ${executed:-0} ))
    failed=$(( ${failed:-0} + $(get error || echo 0) + $(get timeout || echo 0) + $(get aborted || echo 0) ))
fi
# The console log of a long run is cut by whoever keeps only its end: name the failed tests, with
# the first lines of their messages, once more just above the totals.
if [[ -f "$results/tests.trx" ]] && (( ${failed:-0} > 0 )); then
    grep -o '<UnitTestResult [^>]*>' "$results/tests.trx" | grep -v 'outcome="\(Passed\|NotExecuted\)"' \
        | sed -n 's/.*testName="\([^"]*\)".*/FAILED \1/p' \
        | sed 's/&quot;/"/g; s/&apos;/'"'"'/g; s/&lt;/</g; s/&gt;/>/g; s/&amp;/\&/g' >&2
    command -v python3 >/dev/null && python3 - "$results/tests.trx" <<'PY' >&2 || true
import sys, xml.etree.ElementTree as ET
ns = {"t": "http://microsoft.com/schemas/VisualStudio/TeamTest/2010"}
for r in ET.parse(sys.argv[1]).getroot().iterfind(".//t:UnitTestResult", ns):
    if r.get("outcome") not in ("Passed", "NotExecuted"):
        print(f"{r.get('testName')} ({r.get('duration')}):")
        message = r.find(".//t:ErrorInfo/t:Message", ns)
        for line in (message.text or "").splitlines()[:8] if message is not None else []:
            print(f"    {line}")
PY
fi
# Tests remove the network namespaces they create, also on failure; a test process that was killed
# cannot. Remove what such a process left (its id is in the name) and count it as a failure.
for ns in $(ip netns list 2>/dev/null | awk '/^rings-test-/ {print $1}'); do
    pid=${ns#rings-test-}; pid=${pid%%-*}
    if [[ $pid =~ ^[0-9]+$ && ! -d /proc/$pid ]]; then
        echo "network namespace $ns was left behind by a test; removed" >&2
        ip netns del "$ns" || true
        failed=$(( ${failed:-0} + 1 ))
    fi
done
if [[ $status -ne 0 && $failed -eq 0 ]]; then
    failed=1
fi
# The benchmarks run once each as a dry run, so they keep compiling and running (never timed here).
# BenchmarkDotNet builds its own host project first; on a busy machine that takes more than its
# default two minutes, so the build gets longer.
if ! (cd bench && dotnet run -c Release --no-build -- --filter '*' --job dry --buildTimeout 1200 > "$results/bench-dry.log" 2>&1); then
    echo "benchmark dry run failed:" >&2
    tail -40 "$results/bench-dry.log" >&2
    failed=$(( failed + 1 ))
    status=1
else
    passed=$(( ${passed:-0} + 1 ))
    echo "benchmark dry run: $(grep -c '^| ' "$results/bench-dry.log" || true) table rows, all benchmarks ran"
fi

echo "${passed:-0} passed, ${failed} failed, ${skipped} skipped"
[[ $status -eq 0 && $failed -eq 0 ]]
