#!/usr/bin/env bash
# Mutation check: each file in scripts/mutants/ is a patch that breaks one thing on purpose (a
# store-load fence deleted, the EVENT_IDX formula off by one, a loop check or a re-check before
# sleeping left out, a wrap counter flipped wrongly, a one-byte copy error). For each, this applies
# the patch, builds the mutated libraries, puts the sources back at once, drops the mutated
# Rings.dll and Rings.Linux.dll into the built tests and runs the tests that should catch it. A
# mutant is killed when at least one test fails (or hangs). At the end the tests get their own
# libraries back.
#
#   scripts/mutants.sh             every mutant
#   scripts/mutants.sh NAME...     the named ones (file names without .patch)
#
# Prints one line per mutant: name, KILLED or SURVIVED, the failing tests, and for the fence
# mutants the lost wake-ups the stress test counted. Exit status 1 when a mutant survived.
# MUTANT_LOGS=DIR keeps each mutant's test log there.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
mutants="$root/scripts/mutants"
bin="$root/tests/bin/Release/net10.0"
work="$(mktemp -d)"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1

if [[ -n "$(git status --porcelain -- src)" ]]; then
    echo "src/ has uncommitted changes; commit or stash them first" >&2
    exit 2
fi

names=("$@")
if (( ${#names[@]} == 0 )); then
    for p in "$mutants"/*.patch; do
        names+=("$(basename "$p" .patch)")
    done
fi

# Which tests should catch a mutant, by its name.
filter_for() {
    case "$1" in
        # Each fence is raced by the stress cases of its format and direction.
        fence-split-device-enable|fence-split-driver-kick) echo "FullyQualifiedName~NotificationFenceStressTests.Split_device_waiting" ;;
        fence-split-driver-enable|fence-split-device-call) echo "FullyQualifiedName~NotificationFenceStressTests.Split_driver_waiting" ;;
        fence-packed-device-enable|fence-packed-driver-kick) echo "FullyQualifiedName~NotificationFenceStressTests.Packed_device_waiting" ;;
        fence-packed-driver-enable|fence-packed-device-call) echo "FullyQualifiedName~NotificationFenceStressTests.Packed_driver_waiting" ;;
        event-idx-*|recheck-*) echo "FullyQualifiedName~Rings.Tests.Conformance&FullyQualifiedName!~NotificationFenceStress|FullyQualifiedName~Rings.Tests.Split|FullyQualifiedName~Rings.Tests.Packed" ;;
        loop-*) echo "FullyQualifiedName~Rings.Tests.Conformance&FullyQualifiedName!~NotificationFenceStress|FullyQualifiedName~Rings.Tests.Split|FullyQualifiedName~Rings.Tests.Fuzz" ;;
        wrap-*) echo "FullyQualifiedName~Rings.Tests.Conformance&FullyQualifiedName!~NotificationFenceStress|FullyQualifiedName~Rings.Tests.Packed|FullyQualifiedName~Rings.Tests.Fuzz" ;;
        copy-*) echo "FullyQualifiedName~Rings.Tests.Conformance&FullyQualifiedName!~NotificationFenceStress|FullyQualifiedName~Rings.Tests.Split|FullyQualifiedName~Rings.Tests.Packed|FullyQualifiedName~Rings.Tests.Net|FullyQualifiedName~Rings.Tests.Runtime|FullyQualifiedName~Rings.Tests.VhostUser.SessionTests|FullyQualifiedName~Rings.Tests.Fuzz" ;;
        *) echo "FullyQualifiedName~Rings.Tests" ;;
    esac
}

echo "== building the tests once"
dotnet build "$root/tests/Rings.Tests.csproj" -c Release -nologo -v quiet >"$work/build.log" 2>&1 || { tail -20 "$work/build.log"; exit 1; }
mkdir -p "$work/pristine"
cp "$bin/Rings.dll" "$bin/Rings.Linux.dll" "$work/pristine/"

applied=""
restore() {
    if [[ -n "$applied" ]]; then
        git apply -R "$applied" || true
        applied=""
    fi
    cp "$work/pristine/"*.dll "$bin/"
}
trap 'restore; rm -rf "$work"' EXIT
# A signal ends the script through the EXIT trap (bash runs it on exit, not on a fatal signal).
trap "exit 143" TERM
trap "exit 130" INT

survived=0
printf '%-32s %-9s %s\n' "mutant" "result" "failing tests (lost wake-ups where counted)"
for name in "${names[@]}"; do
    patch="$mutants/$name.patch"
    [[ -f "$patch" ]] || { echo "no mutant $name" >&2; exit 2; }
    git apply "$patch"
    applied="$patch"
    if ! dotnet build "$root/src/Drivers/Rings.Linux.csproj" -c Release -nologo -v quiet -o "$work/mutant" >"$work/build.log" 2>&1; then
        restore
        printf '%-32s %-9s %s\n' "$name" "NO-BUILD" "$(grep -m1 ' error ' "$work/build.log")"
        continue
    fi
    git apply -R "$patch"
    applied=""
    cp "$work/mutant/Rings.dll" "$work/mutant/Rings.Linux.dll" "$bin/"

    log="$work/$name.log"
    set +e
    RINGS_STRESS_SECONDS="${RINGS_STRESS_SECONDS:-8}" dotnet test "$root/tests/Rings.Tests.csproj" -c Release --no-build --filter "$(filter_for "$name")" \
        --blame-hang-timeout 4min --logger "console;verbosity=normal" >"$log" 2>&1
    rc=$?
    set -e
    restore

    failed="$( (sed -n 's/^ *Failed Rings\.Tests\.\(.*\) \[[^]]*\]$/\1/p' "$log" || true) | sort -u | head -6 | paste -sd ';' -)"
    rounds="$( (grep -o '^ *[0-9][0-9]* rounds in [0-9.]* s' "$log" || true) | sed 's/^ *//; s/ rounds in /\//; s/ s$/s/' | sort -u | paste -sd ',' -)"
    lost="$( (grep -o '[0-9][0-9]* lost wake-ups' "$log" || true) | (grep -v '^0 ' || true) | sed 's/ lost wake-ups//' | paste -sd ',' -)"
    hung="$( (grep -o 'The active test run was aborted[^.]*' "$log" || true) | head -1)"
    if (( rc != 0 )); then
        printf '%-32s %-9s %s%s\n' "$name" "KILLED" "${failed:-$hung}" "${lost:+ (lost wake-ups: $lost; rounds/time: $rounds)}"
    else
        survived=$((survived + 1))
        printf '%-32s %-9s %s %s\n' "$name" "SURVIVED" "$(grep -m1 'Passed!\|Total tests' "$log" || true)" "${rounds:+(rounds/time: $rounds)}"
    fi
    if [[ -n "${MUTANT_LOGS:-}" ]]; then
        mkdir -p "$MUTANT_LOGS"
        cp "$log" "$MUTANT_LOGS/"
    fi
done

(( survived == 0 ))
