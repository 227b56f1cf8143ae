#!/usr/bin/env bash
# One <=10-minute chunk of the pretrained-model training on the lent H100 (see README there).
# Resumes from $RUN_DIR/checkpoints/last.ckpt when an earlier chunk left one; a new stage that
# warm-starts with init_from=... needs a RUN_DIR of its own (init_from is ignored when resuming).
set -e
MAX_TIME=${MAX_TIME:-00:00:08:00}
RUN_DIR=${RUN_DIR:-/root/fsnet_run}
DATA_ROOT=${DATA_ROOT:-$PWD/.devdata/debian_audio}  # or /root/fsnet_data/... (gpu_copy_part.sh)
TAG=${TAG:+$TAG-}      # prefix of this run's files under $OUT (two runs side by side on one GPU)
EXPORT=${EXPORT:-1}    # 0: no release files (a chunk that a later one continues)
NUM_WORKERS=${NUM_WORKERS:-14}  # loader workers per run (6 each for two runs on 16 cores)
[ -d /tmp/site ] || bash benchmarks/device_setup.sh >/dev/null 2>&1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
python3 train.py recipe=debian_audio recipe.root=$DATA_ROOT trainer=gpu \
    data.num_workers=$NUM_WORKERS +trainer.max_time=$MAX_TIME hydra.run.dir=$RUN_DIR \
    callbacks.progress_bar.refresh_rate=200 "$@" 2>&1 | grep -v -e "it/s" -e Warning | tail -40
# this chunk's log: a resumed run logs to the next csv/version_N
csv_dir=$(ls -d "$RUN_DIR"/csv/version_* 2>/dev/null | sort -V | tail -1)
[ -z "$csv_dir" ] || cp "$csv_dir/metrics.csv" "$OUT/${TAG}metrics.csv"
ls -la $RUN_DIR/checkpoints
[ "$EXPORT" = 1 ] || exit 0
best=$(ls -t $RUN_DIR/checkpoints/best-*.ckpt 2>/dev/null | head -1)
python3 -m fsnet.checkpoint "${best:-$RUN_DIR/checkpoints/last.ckpt}" "$OUT/${TAG}release_fp16.pt" --half
# the last step's weights too: the machine (and its run folder) is gone once the lease ends, and a
# later stage may want them (stage 9 kept only its best, so they were lost)
[ -f "$RUN_DIR/checkpoints/last.ckpt" ] && python3 -m fsnet.checkpoint "$RUN_DIR/checkpoints/last.ckpt" "$OUT/${TAG}release_last_fp16.pt" --half
