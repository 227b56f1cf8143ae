"""The training loop's cost around the network: no host reads between NaN checks, the NaN check's
bookkeeping, the whole-step graph (its eager form on CPU, the graph itself on a GPU), precision."""

from __future__ import annotations

import math
from functools import partial

import pytest
import test_train
import torch
from test_train import _RecordLosses

from fsnet.errors import FsnetError
from fsnet.nonfinite import NonFiniteWatch
from fsnet.step_graph import graph_mode, plain_optimizer_state
from fsnet.system import EnhancementSystem

try:
    import pytorch_lightning as pl
except ImportError:  # pragma: no cover
    import lightning.pytorch as pl


def quiet_trainer(**kwargs) -> pl.Trainer:
    """test_train's quiet CPU trainer, without validation unless asked."""
    return test_train.quiet_trainer(**{"limit_val_batches": 0, **kwargs})


def loader(examples: int = 12, batch: int = 2, samples: int = 4000, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    noisy = torch.randn(examples, samples, generator=generator) * 0.1
    clean = noisy * 0.5 + 0.01 * torch.randn(examples, samples, generator=generator)
    dataset = torch.utils.data.TensorDataset(noisy, clean)
    return torch.utils.data.DataLoader(dataset, batch_size=batch)


class EagerStepSystem(EnhancementSystem):
    """``cuda_graph=step`` on the CPU: the same manual-optimisation step, never captured."""

    def _check_one_gpu(self, x: torch.Tensor) -> None:
        pass


def weights(system: EnhancementSystem) -> torch.Tensor:
    return torch.cat([p.detach().flatten().cpu() for p in system.model.parameters()])


# ------------------------------------------------------------------------------ the NaN check
def test_watch_names_the_first_bad_step_and_batch():
    watch = NonFiniteWatch()
    finite = torch.ones(2, 8)
    for step in range(3):
        watch.record(torch.tensor(0.5), finite, finite)
        watch.note(step, 0, step)
    assert watch.unchecked == 3
    assert watch.check([], latest=torch.tensor(0.25)) == 0.25  # nothing bad: the latest value back
    assert watch.unchecked == 0
    bad_input = finite.clone()
    bad_input[1, 3] = math.inf
    for step, (loss, noisy) in enumerate(
        [(0.5, finite), (math.nan, bad_input), (math.nan, finite)], start=3
    ):
        watch.record(torch.tensor(loss), noisy, finite)
        watch.note(step, 1, step - 3)
    with pytest.raises(FsnetError, match=r"nan at global step 4 \(epoch 1, batch 1\); the input"):
        watch.check([])


def test_watch_blames_the_weights_when_the_inputs_are_finite():
    watch = NonFiniteWatch()
    finite = torch.ones(2, 8)
    watch.record(torch.tensor(math.inf), finite, finite)
    watch.note(7, 2, 5)
    params = [torch.ones(3), torch.tensor([1.0, math.nan])]
    with pytest.raises(FsnetError, match=r"inf at global step 7 \(epoch 2, batch 5\).* 1 weight"):
        watch.check(params)


def test_nan_is_found_at_the_next_check_not_later(tiny_model_config):
    """check_every_n_steps=2: a NaN input at step 2 stops training at the check after step 3."""
    data = loader(examples=20)
    data.dataset.tensors[0][5, 10] = math.nan  # batch 2
    seen = []

    class Steps(pl.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            seen.append(batch_idx)

    system = EnhancementSystem(tiny_model_config, metric_workers=0, check_every_n_steps=2)
    with pytest.raises(FsnetError, match=r"global step 2 \(epoch 0, batch 2\); the input batch"):
        quiet_trainer(max_steps=10, callbacks=[Steps()]).fit(system, train_dataloaders=data)
    assert seen == [0, 1, 2]  # raised in batch 3's training_step, before its batch end


def test_no_checkpoint_of_an_unchecked_nan(tiny_model_config, tmp_path):
    """A checkpoint between two checks reads the NaN record first: a diverged state is named,
    never saved (every_n_train_steps could otherwise overwrite a good last.ckpt)."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    data = loader(examples=12)
    data.dataset.tensors[1][2, 10] = math.nan  # batch 1's clean signal
    system = EnhancementSystem(tiny_model_config, metric_workers=0, check_every_n_steps=100)
    every = ModelCheckpoint(dirpath=tmp_path, filename="last", every_n_train_steps=2)
    trainer = quiet_trainer(max_steps=6, enable_checkpointing=True, callbacks=[every])
    with pytest.raises(FsnetError, match=r"global step 1 \(epoch 0, batch 1\); the input batch"):
        trainer.fit(system, train_dataloaders=data)
    assert not list(tmp_path.glob("*.ckpt"))


_HOST_READS = ("item", "tolist", "__bool__", "__float__", "__int__")


def test_no_host_reads_between_checks(tiny_model_config, monkeypatch):
    """Between NaN checks and logging steps a training step reads no tensor on the host (on a GPU
    each read waits for it): .item(), .tolist(), bool(), float(), int() are never called."""
    import traceback

    reads: list[str] = []
    recording = [False]

    def watch(name):
        original = getattr(torch.Tensor, name)

        def wrapper(self, *args, **kwargs):
            if recording[0]:
                frame = traceback.extract_stack(limit=3)[0]
                reads.append(f"{name} in {frame.name} ({frame.filename}:{frame.lineno})")
            return original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, wrapper)

    for name in _HOST_READS:
        watch(name)

    class Window(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            recording[0] = batch_idx >= 1  # the first step sets things up (logger keys, state)

        def on_train_epoch_end(self, trainer, module):
            recording[0] = False

    system = EnhancementSystem(
        tiny_model_config, metric_workers=0, check_every_n_steps=100, spectral_loss_weight=0.5
    )
    quiet_trainer(
        max_epochs=1, log_every_n_steps=100, gradient_clip_val=1.0, callbacks=[Window()]
    ).fit(system, train_dataloaders=loader(examples=12))
    assert reads == [], reads


# ------------------------------------------------------------------------------ the step graph
def test_graph_mode_values():
    assert graph_mode(False) is False
    assert graph_mode(True) == graph_mode("network") == "network"
    assert graph_mode("step") == "step"
    with pytest.raises(FsnetError, match="system.cuda_graph must be true or false"):
        graph_mode("yes")


def test_step_mode_needs_a_gpu(tiny_model_config):
    system = EnhancementSystem(tiny_model_config, metric_workers=0, cuda_graph="step")
    assert not system.automatic_optimization
    with pytest.raises(FsnetError, match=r"cuda_graph=step needs a CUDA device"):
        quiet_trainer(max_steps=1).fit(system, train_dataloaders=loader())


def _fit(system, steps: int, clip: float | None, ckpt_path=None, examples=12) -> pl.Trainer:
    clip = clip if system.automatic_optimization else None  # the step system clips itself
    trainer = quiet_trainer(max_steps=steps, gradient_clip_val=clip)
    trainer.fit(system, train_dataloaders=loader(examples), ckpt_path=ckpt_path)
    return trainer


def _system(cls, config, mode, clip):
    torch.manual_seed(3)
    return cls(
        config,
        metric_workers=0,
        cuda_graph=mode,
        gradient_clip_val=clip,
        spectral_loss_weight=0.5,
        optimizer=partial(torch.optim.Adam, lr=3e-3, fused=True),
        lr_scheduler=partial(
            torch.optim.lr_scheduler.LinearLR, start_factor=1.0, end_factor=0.2, total_iters=4
        ),
    )


def test_step_mode_matches_automatic_optimisation(tiny_model_config):
    """The manual-optimisation path of cuda_graph=step (eager on CPU) trains exactly as Lightning's
    automatic optimisation: same clipping, update, schedule and step count."""
    clip = 0.05  # small enough to clip every step
    auto = _system(EnhancementSystem, tiny_model_config, False, None)
    start = weights(auto)
    auto_trainer = _fit(auto, 5, clip)
    step = _system(EagerStepSystem, tiny_model_config, "step", clip)
    step_trainer = _fit(step, 5, clip)
    assert step_trainer.global_step == auto_trainer.global_step == 5
    lr = [t.optimizers[0].param_groups[0]["lr"] for t in (auto_trainer, step_trainer)]
    assert lr[0] == pytest.approx(lr[1]) and lr[0] < 3e-3
    moved = (weights(auto) - start).abs().max()
    assert moved > 0
    torch.testing.assert_close(weights(step), weights(auto), rtol=0, atol=1e-5 * float(moved))
    unclipped = _system(EagerStepSystem, tiny_model_config, "step", None)
    _fit(unclipped, 5, None)
    assert (weights(unclipped) - weights(step)).abs().max() > 1e-3 * moved  # clipping acted


def test_step_mode_checkpoint_resumes(tiny_model_config, tmp_path):
    """3 steps, a checkpoint, 3 more after resuming: the step system ends where the automatic one
    does (optimiser state, scheduler and step count come back through its checkpoint). Compared
    with an automatic run resumed alike, not with an uninterrupted one: Lightning replays a batch
    when it resumes a run that stopped at max_steps at an epoch's end."""
    ends = {}
    for cls, mode in ((EnhancementSystem, False), (EagerStepSystem, "step")):
        trainer = _fit(_system(cls, tiny_model_config, mode, 0.05), 3, 0.05, examples=6)
        trainer.save_checkpoint(tmp_path / f"{mode}.ckpt")
        state = torch.load(tmp_path / f"{mode}.ckpt", weights_only=True)
        assert isinstance(state["optimizer_states"][0]["param_groups"][0]["lr"], float)
        resumed = _system(cls, tiny_model_config, mode, 0.05)
        trainer = _fit(resumed, 6, 0.05, ckpt_path=tmp_path / f"{mode}.ckpt", examples=6)
        assert trainer.global_step == 6
        ends[mode] = (weights(resumed), trainer.optimizers[0].param_groups[0]["lr"])
    torch.testing.assert_close(ends["step"][0], ends[False][0], rtol=0, atol=1e-6)
    assert ends["step"][1] == pytest.approx(ends[False][1])


def test_checkpoints_hold_plain_learning_rates():
    checkpoint = {
        "optimizer_states": [{"param_groups": [{"lr": torch.tensor(5e-4), "capturable": True}]}],
        "lr_schedulers": [{"_last_lr": [torch.tensor(5e-4)], "base_lrs": [1e-3]}],
    }
    plain_optimizer_state(checkpoint)
    group = checkpoint["optimizer_states"][0]["param_groups"][0]
    assert group == {"lr": pytest.approx(5e-4), "capturable": False}
    assert type(group["lr"]) is float
    assert type(checkpoint["lr_schedulers"][0]["_last_lr"][0]) is float


def test_build_moves_clipping_into_the_step_system(fake_dns_tree, tmp_path):
    """train.py with system.cuda_graph=step: Lightning's clipping is off (manual optimisation
    refuses it) and the system clips with the trainer's settings; accumulation is refused."""
    from test_train_config import compose_cfg

    from fsnet.train.run import build

    tree = fake_dns_tree(n_val=1, n_rir=0)
    common = [
        "model=tiny",
        "trainer=cpu",
        "logger=none",
        f"recipe.root={tree.root}",
        "system.cuda_graph=step",
        "trainer.gradient_clip_algorithm=value",
    ]
    run = build(compose_cfg(common, tmp_path))
    assert run.trainer.gradient_clip_val is None and not run.system.automatic_optimization
    assert (run.system.gradient_clip_val, run.system.gradient_clip_algorithm) == (10, "value")
    with pytest.raises(FsnetError, match="accumulate_grad_batches=1"):
        build(compose_cfg([*common, "trainer.accumulate_grad_batches=2"], tmp_path))
    with pytest.raises(FsnetError, match="16-mixed cannot clip the gradients of a fused"):
        build(compose_cfg([*common, "trainer.precision=16-mixed"], tmp_path))
    # eager, fused Adam under bf16: the system clips too (Lightning would refuse to)
    eager = [c for c in common if c != "system.cuda_graph=step"] + ["trainer.precision=bf16-mixed"]
    run = build(compose_cfg(eager, tmp_path))
    assert run.trainer.gradient_clip_val is None and run.system.automatic_optimization
    assert (run.system.gradient_clip_val, run.system.gradient_clip_algorithm) == (10, "value")


# ------------------------------------------------------------------------------ precision
@pytest.mark.parametrize(
    "precision, accelerator, cuda, bf16, expected",
    [
        ("auto", "auto", True, True, "bf16-mixed"),
        ("auto", "gpu", True, False, "32-true"),  # e.g. a V100: bf16 only emulated
        ("auto", "auto", False, False, "32-true"),
        ("auto", "cpu", True, True, "32-true"),
        ("16-mixed", "auto", True, True, "16-mixed"),
    ],
)
def test_precision_auto(precision, accelerator, cuda, bf16, expected, monkeypatch):
    from fsnet.train.run import training_precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16)
    cfg = {"precision": precision, "accelerator": accelerator}
    assert training_precision(cfg) == expected


# ------------------------------------------------------------------------------ on a GPU
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_step_graph_matches_eager(precision, tmp_path):
    """The whole step replayed as one graph trains as the eager loop: same losses and weights
    (fp32), losses within bf16's run-to-run noise; its checkpoint resumes eagerly."""
    torch.manual_seed(0)
    noisy = torch.randn(24, 16000) * 0.1
    clean = noisy * 0.5 + 0.01 * torch.randn(24, 16000)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(noisy, clean), batch_size=4)
    runs = {}
    for mode in (False, "step"):
        system = _system(EnhancementSystem, {}, mode, 10.0)
        trainer = quiet_trainer(
            accelerator="gpu",
            precision=precision,
            max_steps=6,
            gradient_clip_val=10.0 if mode is False else None,
            callbacks=[record := _RecordLosses()],
        )
        trainer.fit(system, train_dataloaders=data)
        losses = record.losses
        assert trainer.global_step == 6
        assert (system.__dict__["_step_graph"] is not None) == (mode == "step")
        runs[mode] = (losses, weights(system), trainer.optimizers[0].param_groups[0]["lr"])
        if mode == "step":
            trainer.save_checkpoint(tmp_path / "step.ckpt")
    (eager_losses, eager_w, eager_lr), (graph_losses, graph_w, graph_lr) = runs[False], runs["step"]
    assert float(graph_lr) == pytest.approx(float(eager_lr))
    if precision == "32-true":
        assert graph_losses == pytest.approx(eager_losses, rel=1e-4)
        assert (graph_w - eager_w).abs().max() < 1e-3 * eager_w.abs().max()
    else:
        assert graph_losses == pytest.approx(eager_losses, rel=3e-2)
    resumed = _system(EnhancementSystem, {}, False, 10.0)  # the step run's checkpoint, eagerly
    quiet_trainer(accelerator="gpu", precision=precision, max_steps=8).fit(
        resumed, train_dataloaders=data, ckpt_path=tmp_path / "step.ckpt"
    )
    assert math.isfinite(float(weights(resumed).abs().max()))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_train_py_step_graph_runs_resumes_and_continues_eagerly(fake_dns_tree, tmp_path, run_cli):
    """train.py system.cuda_graph=step on the synthetic corpus: 30 steps with validations and
    checkpoints, resumed in step mode, then resumed eagerly from the step run's last.ckpt."""
    import csv
    import json

    tree = fake_dns_tree(n_clean=16, n_noise=8, n_rir=2, n_val=2)
    run_dir = tmp_path / "run"
    common = [
        "train.py",
        "recipe=dns",
        f"recipe.root={tree.root}",
        f"recipe.rir_root={tree.rir_root}",
        "trainer=gpu",
        "data.batch_size=8",
        "data.samples_per_epoch=80",  # 10 steps per epoch, a validation after each
        "data.num_workers=2",
        "system.metric_workers=0",
        "trainer.log_every_n_steps=5",
        "trainer.enable_progress_bar=false",
        "logger=csv",
        f"hydra.run.dir={run_dir}",
    ]
    for steps, mode in ((30, "step"), (40, "step"), (50, "false")):
        out = run_cli([*common, f"trainer.max_steps={steps}", f"system.cuda_graph={mode}"])
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        summary = json.loads((run_dir / "train_summary.json").read_text())
        assert summary["global_step"] == steps
    log_text = (run_dir / "train.log").read_text()
    assert "captured the whole training step as one CUDA graph" in log_text
    assert "precision bf16-mixed" in log_text
    rows = [r for f in run_dir.rglob("metrics.csv") for r in csv.DictReader(open(f))]
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert losses and all(math.isfinite(v) for v in losses)
    assert any(r.get("train/audio_seconds_per_second") for r in rows)


def test_system_clips_a_fused_optimiser_under_bf16(tiny_model_config):
    """Lightning refuses to clip a fused optimiser's gradients under any mixed precision (its
    check is for fp16's loss scale); the system clips them itself, as train.py arranges."""
    clipped = _system(EnhancementSystem, tiny_model_config, False, 0.05)
    start = weights(clipped)
    quiet_trainer(max_steps=3, precision="bf16-mixed").fit(clipped, train_dataloaders=loader())
    unclipped = _system(EnhancementSystem, tiny_model_config, False, None)
    quiet_trainer(max_steps=3, precision="bf16-mixed").fit(unclipped, train_dataloaders=loader())
    moved = (weights(clipped) - start).abs().max()
    assert moved > 0
    assert (weights(unclipped) - weights(clipped)).abs().max() > 1e-3 * moved  # clipping acted
    with pytest.raises(RuntimeError, match="does not allow for gradient clipping"):
        quiet_trainer(max_steps=1, precision="bf16-mixed", gradient_clip_val=1.0).fit(
            _system(EnhancementSystem, tiny_model_config, False, None),
            train_dataloaders=loader(),
        )


def test_subband_activity_is_logged_and_a_dead_relu_is_reported(tiny_model_config, caplog):
    from fsnet.train.monitors import SubbandActivity

    def validate(system) -> float:
        monitor = SubbandActivity()
        noisy = torch.randn(2, 8000, generator=torch.Generator().manual_seed(0)) * 0.1
        batch = {"noisy": noisy, "clean": noisy * 0.5, "lengths": torch.tensor([8000, 8000])}
        batches = torch.utils.data.DataLoader([batch], batch_size=None)
        trainer = quiet_trainer(callbacks=[monitor], limit_val_batches=1)
        trainer.validate(system, dataloaders=batches, verbose=False)
        return float(trainer.callback_metrics["val/subband_active"])

    system = EnhancementSystem(tiny_model_config, metric_workers=0, metrics=[])
    with torch.no_grad():  # (a random init can itself start dead: one ReLU unit per band)
        system.model.bottleneck.proj.bias.fill_(100.0)  # every output above zero
    assert validate(system) == 1.0
    with torch.no_grad():
        system.model.bottleneck.proj.bias.fill_(-100.0)  # every output below zero: ReLU dead
    with caplog.at_level("WARNING", logger="fsnet.train"):
        assert validate(system) == 0.0
    assert "ReLU is dead" in caplog.text


def test_reopen_subband_lets_a_dead_relu_learn_again(fake_dns_tree, tmp_path, tiny_model_config):
    """init_reopen_subband=true: a dead sub-band output (weights of an init_from release) is
    reopened, so the sub-band model gets gradients again (its output layer first: the LSTM's
    follow once that layer's weights leave zero); without it, it gets none."""
    from test_train_config import compose_cfg

    from fsnet.checkpoint import save_release
    from fsnet.model import build_model
    from fsnet.train.run import build

    dead = build_model(tiny_model_config)
    with torch.no_grad():
        dead.bottleneck.proj.bias.fill_(-100.0)
    release = tmp_path / "dead.pt"
    save_release(dead, release)
    tree = fake_dns_tree(n_val=1, n_rir=0)
    common = ["model=tiny", "trainer=cpu", "logger=none", f"recipe.root={tree.root}"]
    noisy = 0.1 * torch.randn(2, 8000, generator=torch.Generator().manual_seed(1))

    def subband_grad(options) -> float:
        run = build(compose_cfg([*common, f"init_from={release}", *options], tmp_path))
        loss, _ = run.system.training_loss(noisy, 0.5 * noisy)
        loss.backward()
        grads = [p.grad for p in run.system.model.bottleneck.parameters() if p.grad is not None]
        return sum(float(g.abs().sum()) for g in grads)

    assert subband_grad([]) == 0.0
    assert subband_grad(["init_reopen_subband=true"]) > 0.0
    with pytest.raises(FsnetError, match="init_reopen_subband=true acts on the init_from weights"):
        build(compose_cfg([*common, "init_reopen_subband=true"], tmp_path))
