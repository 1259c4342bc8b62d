#!/usr/bin/env bash
# LarPO on the embedded default with the default command line: `python run.py seed=S loss=L`.
# Every run starts from the shipped round-0 policy (larpo/assets/round0), so seeds vary only
# sampling and training. Default: the listwise objective on seeds 0-4, and the other three
# objectives on seeds 0-1.  usage: experiments/embedded_default/losses_x_seeds.sh [OUT_DIR]
# (≈ 80 s a run on 2 CPU cores; 11 runs.) Prints a markdown table with the paired gain.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "${1:-$repo/runs/losses_x_seeds}"
out=$(cd "${1:-$repo/runs/losses_x_seeds}" && pwd)
py=${PYTHON:-python}
[ -x "$repo/.venv/bin/python" ] && [ -z "${VIRTUAL_ENV:-}" ] && py=$repo/.venv/bin/python
cd "$repo"
runs="listwise:0 listwise:1 listwise:2 listwise:3 listwise:4 pairwise:0 contrastive:0 listmle:0 pairwise:1 contrastive:1 listmle:1"
for spec in $runs; do
  loss=${spec%:*}; seed=${spec#*:}; d=$out/s${seed}_$loss
  [ -f "$d.wall_s" ] && continue  # measured already (delete the .wall_s file to re-run)
  start=$(date +%s)
  "$py" run.py run_dir="$d" seed="$seed" loss="$loss" > "$d.log" 2>&1
  echo $(( $(date +%s) - start )) > "$d.wall_s"
done
"$py" - "$out" $runs <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print("| seed | loss | round 0 | round 3 | gain ± paired SE | gain / SE | wall |")
print("|---|---|---|---|---|---|---|")
for spec in sys.argv[2:]:
    loss, seed = spec.split(":")
    d = out / f"s{seed}_{loss}"
    rounds = json.loads((d / "summary.json").read_text())["rounds"]
    e0, e3 = rounds[0]["eval"], rounds[-1]["eval"]
    wall = (out / f"s{seed}_{loss}.wall_s").read_text().strip()
    z = e3["accuracy_gain"] / e3["accuracy_gain_se"]
    print(f"| {seed} | {loss} | {e0['accuracy']:.3f} ± {e0['accuracy_se']:.3f} | {e3['accuracy']:.3f} ± "
          f"{e3['accuracy_se']:.3f} | {e3['accuracy_gain']:+.3f} ± {e3['accuracy_gain_se']:.3f} | {z:.1f} | {wall} s |")
PY
