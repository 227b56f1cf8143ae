#!/usr/bin/env bash
# Steps per second of the real training loop (train.py, Lightning, data loader, bf16) on one GPU,
# eager vs system.cuda_graph=true, on a synthetic DNS-layout corpus (tests/conftest.py), so it
# needs no data. Prints the median logged train/audio_seconds_per_second of each run.
#   bash benchmarks/gpu_train_loop.sh [STEPS]
set -e
STEPS=${1:-600}
WORK=${WORK:-/tmp/fsnet_loop}
rm -rf "$WORK" && mkdir -p "$WORK"
python3 - "$WORK/corpus" <<'PY'
import sys
from pathlib import Path
sys.path.insert(0, "tests")
from conftest import make_fake_dns_tree
make_fake_dns_tree(Path(sys.argv[1]), n_clean=64, clean_seconds=5.0, n_noise=32, noise_seconds=5.0,
                   n_rir=8, n_val=4, val_seconds=3.0)
PY
for graph in false true; do
    python3 train.py recipe=dns recipe.root="$WORK/corpus" recipe.rir_root="$WORK/corpus/rir" \
        trainer=gpu data.num_workers=12 trainer.max_steps="$STEPS" trainer.enable_progress_bar=false \
        trainer.log_every_n_steps=10 logger=csv export_release=false system.cuda_graph=$graph \
        hydra.run.dir="$WORK/run_$graph" > "$WORK/log_$graph.txt" 2>&1 || { tail -20 "$WORK/log_$graph.txt"; exit 1; }
    python3 - "$WORK/run_$graph" "$graph" <<'PY'
import csv, statistics, sys
from pathlib import Path
rows = [r for f in Path(sys.argv[1]).rglob("metrics.csv") for r in csv.DictReader(open(f))]
rate = [float(r["train/audio_seconds_per_second"]) for r in rows if r.get("train/audio_seconds_per_second")]
loss = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
rate = rate[len(rate) // 5 :]  # skip warm-up (cudnn autotuning, graph capture)
print(f"cuda_graph={sys.argv[2]}: median {statistics.median(rate):.0f} audio-s/s "
      f"= {72 * 3.072 / statistics.median(rate) * 1e3:.1f} ms/step over {len(rate)} logged steps; "
      f"last loss {loss[-1]:.4f}")
PY
done
