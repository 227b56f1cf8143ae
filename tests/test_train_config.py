"""configs/: every group option composes, every key is documented, targets match their classes."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

from fsnet.config import ModelConfig
from fsnet.train import CONFIG_DIR, preflight, resume_checkpoint

GROUPS = ("paths", "model", "data", "trainer", "logger", "callbacks", "recipe", "lr_scheduler")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def compose_cfg(overrides: list[str], tmp_path: Path):
    """Compose train.yaml the way the CLI does, with the run folder pinned and everything resolved."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3", job_name="train"):
        cfg = compose(
            "train",
            overrides=[
                f"paths.output_dir={tmp_path / 'run'}",
                f"paths.root_dir={tmp_path}",
                *overrides,
            ],
        )
    OmegaConf.resolve(cfg)
    return cfg


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_group_option_composes(group, option, tmp_path):
    cfg = compose_cfg([f"{group}={option}"], tmp_path)
    ModelConfig.from_dict(OmegaConf.to_container(cfg.model))
    assert cfg.recipe.name and cfg.data._target_ == "fsnet.data.DnsDataModule"


def test_groups_have_expected_options():
    assert {"fast_fullsubnet", "tiny"} <= set(options("model"))
    assert {"default", "cpu", "gpu", "ddp"} <= set(options("trainer"))
    assert {"dns", "debian_audio"} <= set(options("recipe"))
    assert {"default", "tensorboard", "csv", "none"} <= set(options("logger"))


def test_paper_model_is_the_modelconfig_default(tmp_path):
    cfg = compose_cfg([], tmp_path)
    assert ModelConfig.from_dict(OmegaConf.to_container(cfg.model)) == ModelConfig()


def _keys(node) -> set[str]:
    return {k for k in node if not k.startswith("_")}


def test_trainer_keys_are_trainer_arguments(tmp_path):
    for option in options("trainer"):
        cfg = compose_cfg([f"trainer={option}"], tmp_path)
        trainer_cls = get_class(cfg.trainer._target_)
        accepted = set(inspect.signature(trainer_cls.__init__).parameters)
        assert _keys(cfg.trainer) <= accepted, (option, _keys(cfg.trainer) - accepted)
    assert compose_cfg(["trainer=gpu"], tmp_path).trainer.precision == "bf16-mixed"
    assert compose_cfg(["trainer=ddp"], tmp_path).trainer.strategy == "ddp"


def test_data_keys_are_datamodule_arguments(tmp_path):
    cfg = compose_cfg([], tmp_path)
    accepted = set(inspect.signature(get_class(cfg.data._target_).__init__).parameters)
    assert _keys(cfg.data) <= accepted, _keys(cfg.data) - accepted
    assert cfg.data.mixing.segment_seconds == 3.072 and list(cfg.data.mixing.snr_range_db) == [
        -5,
        20,
    ]
    assert cfg.data.mixing.sample_rate == cfg.model.sample_rate == 16000


def test_callbacks_loggers_optimizer_instantiate(tmp_path):
    import torch

    cfg = compose_cfg([], tmp_path)
    callbacks = {name: instantiate(node) for name, node in cfg.callbacks.items()}
    best = callbacks["model_checkpoint"]
    assert best.monitor == "val/pesq_wb" and best.mode == "max"
    # a new best also refreshes last_checkpoint's file (not a last-v1.ckpt of its own)
    assert best.save_last is True and not best._enable_version_counter
    last = callbacks["last_checkpoint"]
    assert last.monitor is None and last.filename == "last" and not last._enable_version_counter
    loggers = [instantiate(node) for node in cfg.logger.values()]
    assert {type(lg).__name__ for lg in loggers} == {"TensorBoardLogger", "CSVLogger"}
    opt = instantiate(cfg.optimizer)([torch.nn.Parameter(torch.zeros(1))])
    assert (
        isinstance(opt, torch.optim.Adam)
        and opt.defaults["lr"] == 1e-3
        and opt.defaults["betas"] == (0.9, 0.999)
    )
    assert not compose_cfg(["logger=none"], tmp_path).logger


def test_cli_overrides(tmp_path):
    cfg = compose_cfg(
        [
            "trainer.devices=2",
            "data.batch_size=8",
            "trainer.max_steps=17",
            "trainer.fast_dev_run=true",
        ],
        tmp_path,
    )
    assert cfg.trainer.devices == 2 and cfg.data.batch_size == 8 and cfg.trainer.max_steps == 17
    assert cfg.trainer.fast_dev_run is True


def test_recipe_roots(tmp_path, monkeypatch):
    monkeypatch.delenv("DNS_ROOT", raising=False)
    monkeypatch.delenv("DNS_RIR_ROOT", raising=False)
    monkeypatch.setenv("FSNET_DATA_ROOT", str(tmp_path / "corpora"))
    cfg = compose_cfg(["recipe=dns"], tmp_path)
    assert (
        cfg.data.root == str(tmp_path / "corpora" / "DNS-Challenge" / "datasets")
        and cfg.data.rir_root is None
    )
    monkeypatch.setenv("DNS_ROOT", "/somewhere/dns")
    assert compose_cfg(["recipe=dns"], tmp_path).data.root == "/somewhere/dns"
    assert compose_cfg(["recipe=dns", "recipe.root=/x"], tmp_path).data.root == "/x"
    deb = compose_cfg(["recipe=debian_audio"], tmp_path)
    assert deb.data.root == str(tmp_path / "corpora" / "debian_audio")
    assert deb.data.rir_root == deb.data.root + "/rir" and deb.data.name == "debian_audio"


def test_every_key_has_a_comment():
    """Each key line carries a trailing comment or follows a comment line."""
    missing = []
    for path in sorted(CONFIG_DIR.rglob("*.yaml")):
        if path.name == "evaluate.yaml":  # another tool's config
            continue
        previous = ""
        for number, line in enumerate(path.read_text().splitlines(), 1):
            text = line.strip()
            if text and not text.startswith("#") and re.match(r"^[\w/.\-]+:", text):
                if "#" not in line and not previous.startswith("#"):
                    missing.append(f"{path.relative_to(CONFIG_DIR)}:{number}: {text}")
            previous = text
    assert not missing, "undocumented keys:\n" + "\n".join(missing)


@pytest.mark.parametrize(
    "overrides,expected",
    [
        (["trainer.foo=1"], "Could not override 'trainer.foo'"),
        (["data.batchsize=3"], "Key 'batchsize' is not in struct"),
        (["model=huge"], "Could not find 'model/huge'"),
        (["trainer=ddp", "trainer.devices=2", "trainer.num_nodes=2"], None),
        (["recipe=dns", "data.batch_size=8", "trainer.max_steps=3"], None),
    ],
)
def test_preflight_reports_one_line(overrides, expected):
    problem = preflight(overrides)
    if expected is None:
        assert problem is None
    else:
        assert expected in problem and "\n" not in problem and "Config search path" not in problem


def test_resume_checkpoint(tmp_path):
    from fsnet.errors import FsnetError

    assert resume_checkpoint(True, tmp_path) is None  # nothing to resume yet
    assert resume_checkpoint(False, tmp_path) is None
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    last.write_bytes(b"x")  # truncated or corrupt: one clear error, not a traceback from fit()
    with pytest.raises(FsnetError, match="cannot resume: .*last.ckpt.*resume=false"):
        resume_checkpoint(True, tmp_path)
    torch.save({"pytorch-lightning_version": "2.6.0", "state_dict": {}}, last)
    assert resume_checkpoint(True, tmp_path) == last
    assert resume_checkpoint(str(last), tmp_path) == last
    with pytest.raises(FsnetError, match="does not exist"):
        resume_checkpoint(str(tmp_path / "nope.ckpt"), tmp_path)


def test_noise_folder_weights_override_reaches_the_data_module(tmp_path):
    # the override as recipes/debian_audio/README.md writes it: folder names may start with a digit
    cfg = compose_cfg(
        [
            "data.mixing.noise_balance=folder",
            "data.mixing.noise_folder_weights={0ad_effects: 2, music: 0.25}",
        ],
        tmp_path,
    )
    datamodule = instantiate(cfg.data)
    assert datamodule.mixing.noise_folder_weights == {"0ad_effects": 2.0, "music": 0.25}


def test_augmentation_overrides_reach_the_mixing_config(tmp_path):
    # the overrides as recipes/debian_audio/README.md writes them for stages 13 and 14
    overrides = [
        "data.mixing.clean_eq_probability=0.5",
        "data.mixing.noise_eq_probability=0.25",
        "data.mixing.noise_gain_jitter_db=6",
        "data.mixing.noise_overlay_probability=0.3",
        "data.mixing.noise_overlay_level_range_db=[-12,-2]",
        "data.mixing.silence_between_noises_seconds=[0.2,1.5]",
    ]
    mixing = instantiate(compose_cfg(overrides, tmp_path).data).mixing
    assert mixing.silence_between_noises_seconds == (0.2, 1.5)
    default = instantiate(compose_cfg([], tmp_path).data).mixing
    assert default.silence_between_noises_seconds == (0.2, 0.2)
    assert (mixing.clean_eq_probability, mixing.noise_eq_probability) == (0.5, 0.25)
    assert mixing.eq_coefficient_limit == 0.375
    assert (mixing.noise_gain_jitter_db, mixing.noise_overlay_probability) == (6.0, 0.3)
    assert mixing.noise_overlay_level_range_db == (-12.0, -2.0)
    with pytest.raises(Exception, match="eq_coefficient_limit must be in"):  # Hydra wraps it
        instantiate(compose_cfg(["data.mixing.eq_coefficient_limit=0.6"], tmp_path).data)
