"""Split a debian_audio corpus into parts that each fit one device command (64 MiB with the tree).

    python recipes/debian_audio/split_parts.py data/debian_audio_large .devdata/parts --part-mib 33

Writes ``OUT/p1/debian_audio ... OUT/pN/debian_audio``, each part at most ``--part-mib``: the
clean speech, noise, RIRs and manifest file by file, then a validation set of ``--val-pairs``
pairs per condition from ``test_set/synthetic`` (and ``test_set/synthetic_extra``, if
built) as 16-bit FLAC. Copying every
part into one folder (``recipes/debian_audio/gpu_copy_part.sh``) gives a corpus ``train.py``
reads with ``recipe=debian_audio recipe.root=<that folder>``.
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
from pathlib import Path

import soundfile as sf


def fileid(path: Path) -> int:
    return int(path.stem.split("fileid_")[1])


def split(
    src: Path, out: Path, part_bytes: int, val_pairs: int, first_part_bytes: int | None = None
) -> list[Path]:
    clean = sorted(p for p in (src / "clean").rglob("*") if p.is_file())
    if not clean:
        raise SystemExit(f"split_parts.py: error: no clean speech under {src / 'clean'}")
    # the validation pairs travel as 16-bit FLAC (test_set/ itself stays behind)
    val_flac = {}
    # synthetic_extra: the second held-out set of `prepare.py --sources extended`, when present
    for test_set, condition in (
        (name, cond)
        for name in ("synthetic", "synthetic_extra")
        for cond in ("no_reverb", "with_reverb")
    ):
        folder = src / "test_set" / test_set / condition
        for noisy in sorted((folder / "noisy").glob("*.wav"), key=fileid)[:val_pairs]:
            clean_ref = folder / "clean" / f"clean_fileid_{fileid(noisy)}.wav"
            for path, kind in ((noisy, "noisy"), (clean_ref, "clean")):
                audio, rate = sf.read(path, dtype="int16")
                buffer = io.BytesIO()
                sf.write(buffer, audio, rate, format="FLAC", subtype="PCM_16")
                rel = Path("test_set", test_set, condition, kind, f"{path.stem}.flac")
                val_flac[rel] = buffer.getvalue()
    files = [(p.relative_to(src), p.stat().st_size) for p in clean]
    files += [
        (p.relative_to(src), p.stat().st_size)
        for d in ("noise", "rir")
        for p in sorted((src / d).rglob("*"))
        if p.is_file()
    ]
    files += [(Path("manifest.json"), (src / "manifest.json").stat().st_size)]
    files += [(rel, len(data)) for rel, data in val_flac.items()]
    if out.exists():
        shutil.rmtree(out)
    smallest_part = min(part_bytes, first_part_bytes or part_bytes)
    too_big = [(rel, size) for rel, size in files if size > smallest_part]
    if too_big:
        rel, size = too_big[0]
        raise SystemExit(
            f"split_parts.py: error: {rel} ({size / 2**20:.1f} MiB) is larger than --part-mib"
        )
    # file by file in order, so a part holds whole folders where it can and never passes the limit
    part, used_bytes = 1, 0
    for rel, size in files:
        limit = first_part_bytes if part == 1 and first_part_bytes else part_bytes
        if used_bytes and used_bytes + size > limit:
            part, used_bytes = part + 1, 0
        target = out / f"p{part}" / "debian_audio" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if rel in val_flac:
            target.write_bytes(val_flac[rel])
        else:
            shutil.copy2(src / rel, target)
        used_bytes += size
    return [out / f"p{n}" for n in range(1, part + 1)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("corpus", type=Path, help="corpus built by prepare.py")
    parser.add_argument("out", type=Path, help="folder for the parts (replaced)")
    parser.add_argument("--part-mib", type=float, default=33.0, help="size limit per part")
    parser.add_argument(
        "--first-part-mib",
        type=float,
        default=None,
        help="size limit of part 1 (the first command also carries the wheels); default --part-mib",
    )
    parser.add_argument("--val-pairs", type=int, default=12, help="validation pairs per condition")
    args = parser.parse_args(argv)
    if not (args.corpus / "manifest.json").is_file():
        print(f"split_parts.py: error: {args.corpus} is not a prepared corpus", file=sys.stderr)
        return 2
    first = int(args.first_part_mib * 2**20) if args.first_part_mib else None
    for part in split(args.corpus, args.out, int(args.part_mib * 2**20), args.val_pairs, first):
        mib = sum(p.stat().st_size for p in part.rglob("*") if p.is_file()) / 2**20
        print(f"{part}: {mib:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
