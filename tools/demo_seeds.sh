#!/usr/bin/env bash
# Run ./demo.sh once per seed, one after another, then record every run in one JSON file.
#   tools/demo_seeds.sh OUT_ROOT RECORD SEED...
#   e.g. tools/demo_seeds.sh /tmp/demo-seeds benchmarks/results/demo-seeds.json 0 1 2 3 4 5 6 7 8 9
# Each demo goes to OUT_ROOT/seedN (log: OUT_ROOT/seedN.log). Before each one it waits (10 min at
# most) while another `celltrain fit` runs, and every 20 s it notes other trainings and the load
# average, so the record says how shared the cores were.
set -u
[ $# -ge 3 ] || { echo "usage: $0 OUT_ROOT RECORD SEED..." >&2; exit 2; }
cd "$(dirname "$0")/.."
ROOT=$1 RECORD=$2; shift 2
mkdir -p "$ROOT"; : > "$ROOT/runs.jsonl"
others() { ps -eo args | grep "celltrain fit" | grep -v -e grep -e "$ROOT/" | wc -l; }
for SEED in "$@"; do
  waited=0
  while [ "$(others)" -gt 0 ] && [ $waited -lt 600 ]; do sleep 15; waited=$((waited + 15)); done
  ( while sleep 20; do echo "$(date +%s) $(others) $(cut -d' ' -f1 /proc/loadavg)"; done ) > "$ROOT/contention-$SEED.txt" &
  mon=$!
  t0=$(date +%s)
  ./demo.sh "$ROOT/seed$SEED" "$SEED" > "$ROOT/seed$SEED.log" 2>&1; rc=$?
  t1=$(date +%s); kill $mon 2>/dev/null
  echo "{\"seed\": $SEED, \"rc\": $rc, \"wall_s\": $((t1 - t0)), \"waited_s\": $waited, \"start\": $t0}" >> "$ROOT/runs.jsonl"
done
.venv/bin/python tools/demo_seeds.py "$ROOT" "$RECORD" --command "tools/demo_seeds.sh $ROOT $RECORD $*"
