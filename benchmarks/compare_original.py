"""Check fsnet's network against the original Fast FullSubNet implementation, on the same weights.

    git clone https://github.com/Audio-WestlakeU/FullSubNet /path/to/FullSubNet
    python benchmarks/compare_original.py --original /path/to/FullSubNet [--checkpoint PATH]

(``bash benchmarks/fetch_original.sh`` extracts just the files this needs into
``.original/FullSubNet``, at the commit the comparisons were made against.)

The original code is imported from the given checkout at run time (nothing of it is in fsnet).
fsnet's weights (the bundled model by default) are written into the original layout with
``fsnet.checkpoint.to_original_state_dict`` and loaded strictly into the original ``Model``; both
networks then map the same noisy magnitudes (a test recording of this repository, 16 kHz) to
compressed cIRMs ``[1, 2, 257, T]``, with the cumulative and with the utterance norm, and the
script prints the largest absolute difference. Exit status 1 if it exceeds ``--tolerance``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import types
from pathlib import Path

import soundfile as sf
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import fsnet  # noqa: E402
from fsnet.checkpoint import to_original_state_dict  # noqa: E402

# fsnet's norm names -> the original code's norm_type strings.
ORIGINAL_NORM = {"cumulative": "cumulative_laplace_norm", "utterance": "offline_laplace_norm"}


def original_model_class(checkout: Path) -> type:
    """``Model`` of the checkout's ``recipes/dns_interspeech_2020/fast_fullsubnet/model.py``."""
    recipe_dir = checkout / "recipes" / "dns_interspeech_2020"
    if not (recipe_dir / "fast_fullsubnet" / "model.py").exists():
        raise SystemExit(f"compare_original.py: error: no Fast FullSubNet model under {checkout}")
    sys.path[:0] = [str(checkout), str(recipe_dir)]
    if "torchinfo" not in sys.modules and importlib.util.find_spec("torchinfo") is None:
        # The original module imports torchinfo.summary for its __main__ demo only.
        sys.modules["torchinfo"] = types.SimpleNamespace(summary=None)
    return importlib.import_module("fast_fullsubnet.model").Model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--original", type=Path, required=True, help="FullSubNet checkout")
    parser.add_argument("--checkpoint", default=None, help="fsnet model (default: bundled)")
    parser.add_argument("--tolerance", type=float, default=1e-5, help="largest allowed |diff|")
    args = parser.parse_args(argv)

    model_class = original_model_class(args.original.expanduser().resolve())
    noisy, _ = sf.read(REPO / "tests" / "assets" / "noisy_speech.wav", dtype="float32")
    worst = 0.0
    for norm, original_norm in ORIGINAL_NORM.items():
        ours = fsnet.load_model(args.checkpoint, norm=norm).float().eval()
        cfg = ours.config
        theirs = model_class(
            look_ahead=cfg.look_ahead,
            shrink_size=cfg.shrink_size,
            sequence_model=cfg.rnn_type,
            num_mels=cfg.num_mels,
            encoder_input_size=cfg.num_freqs,
            bottleneck_hidden_size=cfg.bottleneck_hidden_size,
            bottleneck_num_layers=cfg.bottleneck_num_layers,
            noisy_input_num_neighbors=cfg.noisy_num_neighbors,
            encoder_output_num_neighbors=cfg.encoder_output_num_neighbors,
            norm_type=original_norm,
        ).eval()
        theirs.load_state_dict(to_original_state_dict(ours), strict=True)
        with torch.inference_mode():
            mag = ours.stft.stft(torch.from_numpy(noisy)[None]).abs()[:, None]  # [1, 1, F, T]
            diff = (ours(mag) - theirs(mag)).abs().max().item()
        print(f"{norm:10s} norm: max |fsnet - original| = {diff:.2e} over {mag.shape[-1]} frames")
        worst = max(worst, diff)
    if worst > args.tolerance:
        print(f"compare_original.py: error: difference {worst:.2e} > {args.tolerance:.0e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
