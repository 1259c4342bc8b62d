#!/usr/bin/env bash
# The four LarPO objectives x two seeds on the embedded default, with the default command line.
# Round 0 (the SFT warm-start) does not depend on the loss, so each seed trains it once
# (`python run.py seed=S`, the listwise run) and the other losses start from a copy of it.
# usage: experiments/embedded_default/losses_x_seeds.sh [OUT_DIR]   (≈ 15 min on 2 CPU cores)
# Prints a markdown table: round-0 and round-3 accuracy, paired gain, wall time per run.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "${1:-$repo/runs/losses_x_seeds}"
out=$(cd "${1:-$repo/runs/losses_x_seeds}" && pwd)
py=${PYTHON:-python}
[ -x "$repo/.venv/bin/python" ] && [ -z "${VIRTUAL_ENV:-}" ] && py=$repo/.venv/bin/python
cd "$repo"
for seed in 0 1; do
  for loss in listwise pairwise contrastive listmle; do
    d=$out/s${seed}_$loss
    [ -f "$d.wall_s" ] && continue  # measured already (delete the .wall_s file to re-run)
    if [ "$loss" != listwise ] && [ ! -d "$d/round_0" ]; then
      mkdir -p "$d"; cp -r "$out/s${seed}_listwise/round_0" "$d/"
    fi
    start=$(date +%s)
    "$py" run.py run_dir="$d" adopt=true seed=$seed loss=$loss > "$d.log" 2>&1
    echo $(( $(date +%s) - start )) > "$d.wall_s"
  done
done
"$py" - "$out" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print("| seed | loss | round 0 | round 3 | gain ± paired SE | wall (this run) |")
print("|---|---|---|---|---|---|")
for seed in (0, 1):
    for loss in ("listwise", "pairwise", "contrastive", "listmle"):
        d = out / f"s{seed}_{loss}"
        rounds = json.loads((d / "summary.json").read_text())["rounds"]
        e0, e3 = rounds[0]["eval"], rounds[-1]["eval"]
        wall = (out / f"s{seed}_{loss}.wall_s").read_text().strip()
        note = " (incl. round 0)" if loss == "listwise" else ""
        print(f"| {seed} | {loss} | {e0['accuracy']:.3f} ± {e0['accuracy_se']:.3f} | {e3['accuracy']:.3f} ± "
              f"{e3['accuracy_se']:.3f} | {e3['accuracy_gain']:+.3f} ± {e3['accuracy_gain_se']:.3f} | {wall} s{note} |")
PY
