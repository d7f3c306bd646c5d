"""A real training process for the fault tests, to be killed, held or let finish.

One script for every test that needs a training process to die for real (SIGKILL runs no
exception handler and no atexit): LeNet-5 from scratch on in-memory digits
(``test_finetune.digits_data``), five epochs, printing ``epoch N`` as each begins.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}

# argv: the run dir, then "kill" (SIGKILL itself in the middle of epoch 3), "hold" (say
# "holding" at the start of epoch 1, then wait to be killed) or "go" (train to the end).
SCRIPT = textwrap.dedent(f"""
    import os, signal, sys, time
    sys.path[:0] = [{str(REPO)!r}, {str(REPO / "tests")!r}]
    import keras
    from test_finetune import digits_data
    from zoo.recipes import finetune as ft

    class Fault(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
            print("epoch", epoch, flush=True)
            if epoch == 1 and sys.argv[2] == "hold":
                print("holding", flush=True)
                time.sleep(600)

        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == 3 and batch == 2 and sys.argv[2] == "kill":
                os.kill(os.getpid(), signal.SIGKILL)

    ft.finetune("lenet5", digits_data(n_train=512), weights=None, epochs=5,
                out_dir=sys.argv[1], verbose=0, callbacks=[Fault()])
    print("finished", flush=True)
    """)


def command(run_dir: Path, mode: str) -> list[str]:
    """The command line of the training process (for ``subprocess.Popen``)."""
    return [sys.executable, "-c", SCRIPT, str(run_dir), mode]


def train(run_dir: Path, mode: str) -> subprocess.CompletedProcess:
    """Runs the training process to its end (``"go"``) or its death (``"kill"``)."""
    return subprocess.run(command(run_dir, mode), capture_output=True, text=True,
                          timeout=300, env=ENV)


def killed_in_epoch_3(run_dir: Path) -> Path:
    """A run directory whose training process was SIGKILLed in the middle of epoch 3."""
    killed = train(run_dir, "kill")
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert killed.stdout.split() == ["epoch", "0", "epoch", "1", "epoch", "2", "epoch", "3"]
    return run_dir
