"""Callbacks that tests hand to ``train.py`` through ``+callbacks.<name>._target_=train_hooks.X``
(the subprocess gets ``tests/helpers/`` on PYTHONPATH)."""

import signal

import pytorch_lightning as pl


class CtrlCAtTrainStart(pl.Callback):
    """A real SIGINT once fit() runs, before the first optimiser step."""

    def on_train_start(self, trainer, pl_module):
        signal.raise_signal(signal.SIGINT)
