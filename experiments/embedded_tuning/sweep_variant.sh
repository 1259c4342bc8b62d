#!/usr/bin/env bash
# usage: variant.sh NAME BASE_DIR overrides...
name=$1; base=$2; shift 2
d=/tmp/tune/$name
rm -rf $d; mkdir -p $d; cp -r $base/round_0 $d/
cd /work/main
start=$(date +%s)
python run.py run_dir=$d threads=1 "$@" > $d/log.txt 2>&1
echo "$name $(( $(date +%s) - start ))s $(python -c "
import json; s=json.load(open('$d/summary.json'))
print(' '.join(f\"r{r['round']}:{r['eval']['accuracy']:.3f}/{r['eval']['mean_reward']:.3f}/wr{r['eval'].get('win_rate',0):.2f}/p8:{r['eval'].get('pass@8',0):.2f}\" for r in s['rounds']))
")" >> /tmp/tune/results.txt
