#!/usr/bin/env bash
# One tuning variant: 3 LarPO rounds from an existing round-0 checkpoint.
# usage: experiments/embedded_tuning/sweep_variant.sh NAME BASE_RUN_DIR [overrides...]
#   BASE_RUN_DIR: a run made with `python run.py rounds=0 run_dir=BASE_RUN_DIR` (its round_0 is copied)
# Appends one line (accuracy/mean reward/win rate/pass@8 per round) to $OUT_DIR/results.txt.
set -euo pipefail
name=$1; base=$2; shift 2
out=${OUT_DIR:-/tmp/larpo_tune}
repo=$(cd "$(dirname "$0")/../.." && pwd)
d=$out/$name
rm -rf "$d"; mkdir -p "$d"; cp -r "$base/round_0" "$d/"
start=$(date +%s)
(cd "$repo" && python run.py run_dir="$d" adopt=true threads=1 "$@" > "$d/log.txt" 2>&1)
echo "$name $(( $(date +%s) - start ))s $(python -c "
import json; s=json.load(open('$d/summary.json'))
print(' '.join(f\"r{r['round']}:{r['eval']['accuracy']:.3f}/{r['eval']['mean_reward']:.3f}/wr{r['eval'].get('win_rate',0):.2f}/p8:{r['eval'].get('pass@8',0):.2f}\" for r in s['rounds']))
")" >> "$out/results.txt"
