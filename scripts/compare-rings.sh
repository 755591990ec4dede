#!/usr/bin/env bash
# Compares the Rings library of a git revision with the working tree's on the burst round trip,
# both builds in one process taking turns (bench/Alternate), so a noisy machine's phases fall on
# both alike. Run from anywhere inside the repository.
#
#   scripts/compare-rings.sh REV [Rings.Alternate options...]
#   scripts/compare-rings.sh HEAD~3 --ring packed --in-order off --seconds 30
#
# Without options it measures split and packed, IN_ORDER on and off, 20 s each. The revision's
# library is built in a temporary worktree, removed afterwards.
#
# Both builds run the working tree's round trip, so REV must have the same public API: before
# 0512fde, PushUsedInOrderBatch took a fourth argument (the descriptor count), and a revision that
# old fails to load here (MissingMethodException).
set -euo pipefail

if [[ $# -lt 1 || "$1" == "--help" || "$1" == "-h" ]]; then
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
    exit $(( $# < 1 ? 2 : 0 ))
fi

rev="$1"
shift
root="$(git rev-parse --show-toplevel)"
git -C "$root" rev-parse --verify --quiet "$rev^{commit}" > /dev/null || { echo "compare-rings: no revision $rev" >&2; exit 2; }

work="$(mktemp -d)"
cleanup() {
    git -C "$root" worktree remove --force "$work/old" > /dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

git -C "$root" worktree add --detach --quiet "$work/old" "$rev"
dotnet build "$work/old/src/Rings/Rings.csproj" -c Release -o "$work/old-bin" > "$work/old-build.log" 2>&1 \
    || { echo "compare-rings: building $rev failed:" >&2; tail -20 "$work/old-build.log" >&2; exit 1; }
dotnet build "$root/bench/Alternate/Rings.Alternate.csproj" -c Release > "$work/new-build.log" 2>&1 \
    || { echo "compare-rings: building the working tree failed:" >&2; tail -20 "$work/new-build.log" >&2; exit 1; }

tool="$root/bench/Alternate/bin/Release/net10.0/Rings.Alternate.dll"
new="$root/bench/Alternate/bin/Release/net10.0"
if [[ $# -gt 0 ]]; then
    dotnet "$tool" --old "$work/old-bin" --new "$new" "$@"
else
    for ring in split packed; do
        for order in on off; do
            dotnet "$tool" --old "$work/old-bin" --new "$new" --ring "$ring" --in-order "$order"
        done
    done
fi
