"""The Lightning data module: a DNS-layout corpus -> training mixtures and the validation set."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from fsnet.data.batch_mixing import collate_components, is_components, mix_batch
from fsnet.data.corpus import CorpusLists, rate_notices, scan_corpus
from fsnet.data.datasets import (
    TrainingMixtures,
    UnpaddedDistributedSampler,
    ValidationPairs,
    _worker_init,
    collate_validation,
)
from fsnet.data.mixing import MixingConfig, group_noise_files
from fsnet.errors import FsnetError

try:  # the Lightning package name changed over time; pyproject pins pytorch-lightning
    import pytorch_lightning as pl
except ImportError:  # pragma: no cover
    import lightning.pytorch as pl  # type: ignore[no-redef]

log = logging.getLogger("fsnet.data")


def mixing_config(mixing: MixingConfig | Mapping[str, Any] | None) -> MixingConfig:
    """The ``data.mixing`` group (a mapping, Hydra's included) as a :class:`MixingConfig`."""
    if isinstance(mixing, MixingConfig):
        return mixing
    if mixing is not None and not isinstance(mixing, Mapping):
        from omegaconf import OmegaConf  # a DictConfig from Hydra

        mixing = OmegaConf.to_container(mixing, resolve=True)  # type: ignore[assignment]
    try:
        return MixingConfig(**dict(mixing or {}))
    except TypeError as exc:  # a key MixingConfig does not have
        known = ", ".join(MixingConfig.__dataclass_fields__)
        raise FsnetError(f"data.mixing: {exc} (keys: {known})") from None


# auto: on the device when the trainer runs on CUDA, else in the loader
MIX_ON = ("auto", "loader", "device")


# ------------------------------------------------------------------------------------ data module
class DnsDataModule(pl.LightningDataModule):
    """DNS-layout corpus -> on-the-fly training mixtures and the fixed synthetic validation set."""

    def __init__(
        self,
        root: str | None,
        rir_root: str | None = None,
        list_dir: str | None = None,
        name: str = "dns",
        root_hint: str = "set recipe.root=<dir>",
        force_rescan: bool = False,
        mixing: MixingConfig | Mapping[str, Any] | None = None,
        samples_per_epoch: int = 360000,
        batch_size: int = 72,
        val_batch_size: int = 8,
        num_workers: int = 8,
        val_num_workers: int = 2,
        prefetch_factor: int = 4,
        pin_memory: bool | None = None,
        seed: int = 0,
        on_bad_file: str = "skip",
        val_max_files: int | None = None,
        mix_on: str = "auto",
    ):
        """``mixing``: :class:`MixingConfig` fields (the ``data.mixing`` group); the rest as in
        ``configs/data/default.yaml``."""
        super().__init__()
        # str(): a folder named like a number (recipe.root=2024) reaches here as an int from Hydra.
        self.root, self.rir_root, self.list_dir = (
            None if p is None else str(p) for p in (root, rir_root, list_dir)
        )
        self.name = name
        self.root_hint = root_hint
        self.force_rescan = bool(force_rescan)
        self.mixing = mixing_config(mixing)
        if on_bad_file not in ("skip", "error"):
            raise FsnetError(f"data.on_bad_file must be skip or error, got {on_bad_file!r}")
        self.samples_per_epoch = int(samples_per_epoch)
        self.batch_size = int(batch_size)
        self.val_batch_size = int(val_batch_size)
        if self.batch_size < 1 or self.val_batch_size < 1:
            raise FsnetError("data.batch_size and data.val_batch_size must be >= 1")
        if self.samples_per_epoch < self.batch_size:
            raise FsnetError(
                f"data.samples_per_epoch ({self.samples_per_epoch}) is smaller than data.batch_size ({self.batch_size})"
            )
        self.num_workers = int(num_workers)
        self.val_num_workers = int(val_num_workers)
        self.prefetch_factor = int(prefetch_factor)
        if self.num_workers < 0 or self.val_num_workers < 0 or self.prefetch_factor < 1:
            raise FsnetError(
                "data.num_workers and data.val_num_workers must be >= 0 (0 = load in the "
                "training process) and data.prefetch_factor >= 1"
            )
        self.pin_memory = pin_memory
        self.seed = int(seed)
        self.on_bad_file = on_bad_file
        if val_max_files is not None and (
            isinstance(val_max_files, bool)
            or not isinstance(val_max_files, int)
            or val_max_files < 1
        ):
            raise FsnetError(
                f"data.val_max_files must be null (all pairs) or a whole number >= 1, got {val_max_files!r}"
            )
        self.val_max_files = val_max_files
        if mix_on not in MIX_ON:
            raise FsnetError(f"data.mix_on must be one of {', '.join(MIX_ON)}, got {mix_on!r}")
        self.mix_on = mix_on
        self.lists: CorpusLists | None = None
        self.train_set: TrainingMixtures | None = None
        self.val_set: ValidationPairs | None = None

    # ---------------------------------------------------------------- scanning
    def scan(self, force: bool | None = None, report: bool = True) -> CorpusLists:
        """Scan the tree (cached lists); FsnetError names what is missing. Idempotent."""
        if self.lists is None or force:
            self.lists = scan_corpus(
                self.root,
                self.rir_root,
                self.list_dir,
                force=self.force_rescan if force is None else force,
                on_bad_file=self.on_bad_file,
                name=self.name,
                root_hint=self.root_hint,
            )
            if report:
                lists = self.lists
                how = f"scanned {', '.join(lists.rescanned)}" if lists.rescanned else "cached lists"
                log.info("%s data: %s (%s in %s)", self.name, lists.summary(), how, lists.list_dir)
                if lists.rir_root is None:
                    log.info(
                        "no RIR folder (recipe.rir_root is null): training without reverberation"
                    )
                for notice in rate_notices(lists, self.mixing.sample_rate):
                    log.info("%s", notice)
            group_noise_files(self.lists.noise, self.mixing)  # a misnamed weight stops here
        return self.lists

    def prepare_data(self) -> None:  # local rank 0 only: write the cached lists
        self.scan()

    def setup(self, stage: str | None = None) -> None:
        lists = self.scan(report=False)
        if self.train_set is None:
            self.train_set = TrainingMixtures(
                lists.clean,
                lists.noise,
                lists.rir,
                self.mixing,
                samples_per_epoch=self.samples_per_epoch,
                seed=self.seed,
                on_bad_file=self.on_bad_file,
            )
        if self.val_set is None:
            pairs = lists.val
            if self.val_max_files and len(pairs) > self.val_max_files:
                # evenly spread, deterministic subset (covers both subsets)
                picks = np.linspace(0, len(pairs) - 1, int(self.val_max_files)).round().astype(int)
                pairs = [pairs[i] for i in sorted(set(picks.tolist()))]
            self.val_set = ValidationPairs(pairs, self.mixing.sample_rate)

    # ---------------------------------------------------------------- loaders
    def _pin(self) -> bool:
        return torch.cuda.is_available() if self.pin_memory is None else bool(self.pin_memory)

    def mixes_on_device(self) -> bool:
        """Whether training batches are mixed after the transfer (``data.mix_on``)."""
        if self.mix_on != "auto":
            return self.mix_on == "device"
        trainer = getattr(self, "trainer", None)
        return trainer is not None and trainer.strategy.root_device.type == "cuda"

    def train_dataloader(self) -> DataLoader:
        if self.train_set is None:
            self.setup("fit")
        assert self.train_set is not None
        trainer = getattr(self, "trainer", None)
        if trainer is not None:  # also right after a resume: the restored epoch
            self.train_set.set_epoch(trainer.current_epoch)
        self.train_set.components = self.mixes_on_device()
        if self.train_set.components:
            log.info("mixing training batches on %s (data.mix_on=%s)", self._device(), self.mix_on)
        extra = {"prefetch_factor": self.prefetch_factor} if self.num_workers > 0 else {}
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            shuffle=False,  # every index is a fresh random mixture; Lightning shards the indices in DDP
            drop_last=True,
            num_workers=self.num_workers,
            pin_memory=self._pin(),
            persistent_workers=False,  # workers must see set_epoch() of each new epoch
            worker_init_fn=_worker_init,
            collate_fn=collate_components if self.train_set.components else None,
            **extra,
        )

    def _device(self) -> str:
        trainer = getattr(self, "trainer", None)
        return "the CPU" if trainer is None else str(trainer.strategy.root_device)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Training components -> ``(noisy, target)`` on the device; other batches as they are."""
        if is_components(batch):
            return mix_batch(batch, self.mixing)
        return batch

    def val_dataloader(self) -> DataLoader:
        if self.val_set is None:
            self.setup("validate")
        assert self.val_set is not None
        sampler = None
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            sampler = UnpaddedDistributedSampler(
                self.val_set, torch.distributed.get_world_size(), torch.distributed.get_rank()
            )
        return DataLoader(
            self.val_set,
            batch_size=self.val_batch_size,
            shuffle=False,
            sampler=sampler,
            num_workers=self.val_num_workers,
            pin_memory=self._pin(),
            collate_fn=collate_validation,
            worker_init_fn=_worker_init,
        )
