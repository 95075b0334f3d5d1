#!/usr/bin/env bash
# The lent GPU machines take a copy of the working tree of at most 64 MiB, carried paths included. The repository
# (16 MB, 7 MB of it the shipped model) plus the pack (.gpu/pbc96.npz, 53.5 MB) is over it. Before the device call
# that trains, set the largest tracked files aside (outside the tree), and put them back after:
#
#   tools/gpu_tree.sh hold      # moves them to /tmp/scopelite-held/, recording their sha256
#   (the device call, carrying .whl and .gpu: tools/gpu_fit.sh)
#   tools/gpu_tree.sh restore   # moves them back and checks every sha256
#
# The files are the shipped model and plots that training on the device does not read.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
held=${SCOPELITE_HELD:-/tmp/scopelite-held}
files=(edge/models/bloodcell_int8.tflite benchmarks/results/pbc-fields-field-mode.png
       benchmarks/results/deepbionet-duplicates.png benchmarks/results/deepbionet-fields-field-mode.png)
cd "$root"
case "${1:-}" in
hold)
    [ ! -e "$held/SHA256SUMS" ] || { echo "Error: $held already holds files: run '$0 restore' first" >&2; exit 2; }
    for f in "${files[@]}"; do
        [ -f "$f" ] || { echo "Error: $f is not here (held already, or moved?): nothing was set aside" >&2; exit 2; }
    done
    mkdir -p "$held"
    sha256sum "${files[@]}" > "$held/SHA256SUMS.tmp"
    for f in "${files[@]}"; do mkdir -p "$held/$(dirname "$f")"; mv "$f" "$held/$f"; done
    mv "$held/SHA256SUMS.tmp" "$held/SHA256SUMS"  # only now: a hold cut short leaves no record that blocks the next
    echo "held ${#files[@]} files in $held; the tree is now $(du -sh --exclude=.git --exclude=.venv . | cut -f1)"
    ;;
restore)
    [ -e "$held/SHA256SUMS" ] || { echo "Error: nothing held in $held" >&2; exit 2; }
    for f in "${files[@]}"; do mkdir -p "$(dirname "$f")"; mv "$held/$f" "$f"; done
    sha256sum -c --quiet "$held/SHA256SUMS"
    rm "$held/SHA256SUMS"
    echo "restored ${#files[@]} files; sha256 checked"
    ;;
*)
    echo "Error: give hold or restore" >&2; exit 2 ;;
esac
