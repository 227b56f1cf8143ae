#!/usr/bin/env bash
# Extract the files of the original Fast FullSubNet (Audio-WestlakeU/FullSubNet, MIT licence) that
# benchmarks/train_speed.py and benchmarks/compare_original.py import: its model, the audio_zen
# modules the model and its training step need (STFT, cIRM target), the recipe's train.toml and the
# licence. Nothing of it is committed to fsnet; DEST is git-ignored and is carried to a GPU machine
# that has no network.
#   bash benchmarks/fetch_original.sh [SOURCE] [DEST] [REF]
# SOURCE: a git directory (bare or not) or a clone URL (default: the GitHub repository);
# DEST: default .original/FullSubNet; REF: commit or branch (default: the commit below).
set -euo pipefail
SOURCE=${1:-https://github.com/Audio-WestlakeU/FullSubNet}
DEST=${2:-.original/FullSubNet}
# The commit fsnet's comparisons were made against (2023-03, "doc: add new model").
REF=${3:-e97448375cd1e883276ad583317b1828318910dc}
FILES=(
    LICENSE
    audio_zen/__init__.py
    audio_zen/constant.py
    audio_zen/acoustics/__init__.py
    audio_zen/acoustics/feature.py
    audio_zen/acoustics/mask.py
    audio_zen/model/__init__.py
    audio_zen/model/base_model.py
    audio_zen/model/module/__init__.py
    audio_zen/model/module/sequence_model.py
    recipes/__init__.py
    recipes/dns_interspeech_2020/__init__.py
    recipes/dns_interspeech_2020/fast_fullsubnet/__init__.py
    recipes/dns_interspeech_2020/fast_fullsubnet/model.py
    recipes/dns_interspeech_2020/fast_fullsubnet/train_shrinkSize2.toml
)
if [ -d "$SOURCE/.git" ]; then
    GIT_DIR=$SOURCE/.git
elif [ -d "$SOURCE" ]; then
    GIT_DIR=$SOURCE
else
    GIT_DIR=$(mktemp -d)
    trap 'rm -rf "$GIT_DIR"' EXIT
    git clone -q --bare --filter=blob:none "$SOURCE" "$GIT_DIR"
fi
COMMIT=$(git --git-dir="$GIT_DIR" rev-parse "$REF^{commit}")
rm -rf "$DEST" && mkdir -p "$DEST"
git --git-dir="$GIT_DIR" archive "$COMMIT" -- "${FILES[@]}" | tar -x -C "$DEST"
echo "$COMMIT" > "$DEST/ORIGINAL_COMMIT"
echo "extracted ${#FILES[@]} files of FullSubNet $COMMIT into $DEST"
