#!/usr/bin/env bash
# The README's contract, as a newcomer meets it: clone this repository's HEAD into a new folder named `gvt` (nothing
# beside it, no ../shared), then run its two commands, `make demo` and `make test`. Prints the time of each and keeps
# the clone for inspection; removes nothing it did not create.
#
#     bash scripts/check_fresh_clone.sh [WORKDIR]     # default: a new temporary folder
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
workdir="${1:-$(mktemp -d)}"
if [ -e "$workdir/gvt" ]; then
    echo "check_fresh_clone: $workdir/gvt exists; pass an empty folder" >&2
    exit 2
fi
mkdir -p "$workdir"
git clone --quiet "$repo" "$workdir/gvt"
cd "$workdir/gvt"
echo "fresh clone of $(git rev-parse --short HEAD) in $workdir/gvt"
for target in demo test; do
    start=$(date +%s)
    make "$target"
    echo "make $target: passed in $(( $(date +%s) - start )) s"
done
