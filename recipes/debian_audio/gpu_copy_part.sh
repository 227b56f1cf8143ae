#!/usr/bin/env bash
# Copy one carried part of the corpus into /root/fsnet_data/debian_audio on the lent GPU machine.
# A device command carries at most 64 MiB (tree and wheels included), so the 125 MiB corpus goes
# over in parts (.devdata/parts/pN/debian_audio or .devdata/parts_v3/pN/..., made as in README.md)
# sent by consecutive commands while the machine stays warm; cp -r merges each part into the same
# tree. Only the carried parts exist on the machine, so the glob picks up exactly those.
set -e
[ -d /tmp/site ] || bash benchmarks/device_setup.sh >/dev/null 2>&1
mkdir -p /root/fsnet_data
for part in .devdata/parts*/p*/debian_audio; do
    cp -r "$part" /root/fsnet_data/
    echo "copied $part"
done
echo "corpus on the machine: $(find /root/fsnet_data/debian_audio -type f | wc -l) files," \
    "$(du -sm /root/fsnet_data/debian_audio | cut -f1) MiB"
