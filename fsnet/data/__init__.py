"""Training data: DNS-Challenge-style corpus trees, on-the-fly mixing and the Lightning data module.

- :mod:`~fsnet.data.corpus`: scanning a corpus tree, the cached file lists, validation pairing;
- :mod:`~fsnet.data.reading`: a segment of a file at the model rate, without reading the rest;
- :mod:`~fsnet.data.mixing`: the mixing rule, :class:`MixingConfig` (``data.mixing``) and the
  augmentations (speed, colouring, busier noise);
- :mod:`~fsnet.data.batch_mixing`: the same mixing for a whole batch on the training device;
- :mod:`~fsnet.data.datasets`: training mixtures (or their components), validation pairs, the DDP
  validation sampler;
- :mod:`~fsnet.data.module`: :class:`DnsDataModule`, what ``configs/data/default.yaml`` builds.
"""

from fsnet.data.corpus import (
    VAL_SUBSETS,
    AudioEntry,
    CorpusLists,
    ValPair,
    default_list_dir,
    find_audio_files,
    probe_files,
    rate_notices,
    scan_corpus,
)
from fsnet.data.datasets import (
    TrainingMixtures,
    UnpaddedDistributedSampler,
    ValidationPairs,
    collate_validation,
)
from fsnet.data.mixing import (
    SPEED_GRID_STEPS,
    MixingConfig,
    change_speed,
    group_noise_files,
    mix_at_snr,
    overlay_noise,
    random_eq,
    rms_dbfs,
)
from fsnet.data.module import DnsDataModule, mixing_config
from fsnet.data.reading import load_whole, read_frames, read_segment

__all__ = [
    "SPEED_GRID_STEPS",
    "VAL_SUBSETS",
    "AudioEntry",
    "CorpusLists",
    "DnsDataModule",
    "MixingConfig",
    "TrainingMixtures",
    "UnpaddedDistributedSampler",
    "ValPair",
    "ValidationPairs",
    "change_speed",
    "collate_validation",
    "default_list_dir",
    "find_audio_files",
    "group_noise_files",
    "load_whole",
    "mix_at_snr",
    "mixing_config",
    "overlay_noise",
    "probe_files",
    "random_eq",
    "rate_notices",
    "read_frames",
    "read_segment",
    "rms_dbfs",
    "scan_corpus",
]
