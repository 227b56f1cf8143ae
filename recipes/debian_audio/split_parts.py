"""Split a debian_audio corpus into parts that each fit one device command (64 MiB with the tree).

    python recipes/debian_audio/split_parts.py data/debian_audio_large .devdata/parts --part-mib 33

Writes ``OUT/p1/debian_audio ... OUT/pN/debian_audio``: the clean speech spread over parts of at
most ``--part-mib``, and in the last part the noise, the RIRs, the manifest and a validation set
of ``--val-pairs`` pairs per condition from ``test_set/synthetic`` as 16-bit FLAC. Copying every
part into one folder (``recipes/debian_audio/gpu_copy_part.sh``) gives a corpus ``train.py``
reads with ``recipe=debian_audio recipe.root=<that folder>``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import soundfile as sf


def fileid(path: Path) -> int:
    return int(path.stem.split("fileid_")[1])


def split(src: Path, out: Path, part_bytes: int, val_pairs: int) -> list[Path]:
    clean = sorted(p for p in (src / "clean").rglob("*") if p.is_file())
    if not clean:
        raise SystemExit(f"split_parts.py: error: no clean speech under {src / 'clean'}")
    if out.exists():
        shutil.rmtree(out)
    part, used = 1, 0
    for path in clean:
        size = path.stat().st_size
        if used and used + size > part_bytes:
            part, used = part + 1, 0
        target = out / f"p{part}" / "debian_audio" / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
        used += size
    rest = sum(
        p.stat().st_size for d in ("noise", "rir") for p in (src / d).rglob("*") if p.is_file()
    )
    last = out / (f"p{part}" if used + rest <= part_bytes else f"p{part + 1}") / "debian_audio"
    for name in ("noise", "rir"):
        shutil.copytree(src / name, last / name)
    shutil.copy2(src / "manifest.json", last / "manifest.json")
    for condition in ("no_reverb", "with_reverb"):
        folder = src / "test_set" / "synthetic" / condition
        for noisy in sorted((folder / "noisy").glob("*.wav"), key=fileid)[:val_pairs]:
            clean_ref = folder / "clean" / f"clean_fileid_{fileid(noisy)}.wav"
            for path, kind in ((noisy, "noisy"), (clean_ref, "clean")):
                audio, rate = sf.read(path, dtype="int16")
                target = last / "test_set" / "synthetic" / condition / kind / f"{path.stem}.flac"
                target.parent.mkdir(parents=True, exist_ok=True)
                sf.write(target, audio, rate, subtype="PCM_16")
    return sorted(out.glob("p*"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("corpus", type=Path, help="corpus built by prepare.py")
    parser.add_argument("out", type=Path, help="folder for the parts (replaced)")
    parser.add_argument("--part-mib", type=float, default=33.0, help="size limit per part")
    parser.add_argument("--val-pairs", type=int, default=12, help="validation pairs per condition")
    args = parser.parse_args(argv)
    if not (args.corpus / "manifest.json").is_file():
        print(f"split_parts.py: error: {args.corpus} is not a prepared corpus", file=sys.stderr)
        return 2
    for part in split(args.corpus, args.out, int(args.part_mib * 2**20), args.val_pairs):
        mib = sum(p.stat().st_size for p in part.rglob("*") if p.is_file()) / 2**20
        print(f"{part}: {mib:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
