"""MethodCallback in a real Lightning Trainer: exact protection, the gate scale under gradient
accumulation, and resuming inside a task from Lightning's checkpoint."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

pl = pytest.importorskip("lightning.pytorch")

import maskcl  # noqa: E402
from maskcl import set_task  # noqa: E402
from maskcl.lightning import MethodCallback  # noqa: E402


class Classifier(pl.LightningModule):
    """A user's own module: it trains ``net`` and adds the callback's regulariser to its loss."""

    def __init__(self, net, callback, optimizer="adamw"):
        super().__init__()
        self.net, self.callback, self.optimizer_name = net, callback, optimizer
        self.scales = []

    def training_step(self, batch, _index):
        x, y = batch
        self.scales.append(float(maskcl.core.context.task_state(self.net).context.scale))
        return F.cross_entropy(self.net(x), y) + self.callback.regularizer()

    def configure_optimizers(self):
        if self.optimizer_name == "sgd":
            return torch.optim.SGD(self.net.parameters(), lr=0.05, momentum=0.9, weight_decay=0.01)
        return torch.optim.AdamW(self.net.parameters(), lr=1e-2, weight_decay=0.01)


def loaders(num_tasks=2, n=120):
    out = []
    for task in range(num_tasks):
        g = torch.Generator().manual_seed(task)
        y = torch.randint(0, 2, (n,), generator=g)
        x = torch.randn(n, 12, generator=g) + (2 * y - 1).unsqueeze(1) * (task + 1)
        out.append(DataLoader(TensorDataset(x, y), batch_size=12))
    return out


def trainer(callback, *others, **options):
    quiet = {"logger": False, "enable_progress_bar": False, "enable_model_summary": False}
    options = {**quiet, "enable_checkpointing": bool(others), **options}
    return pl.Trainer(accelerator="cpu", devices=1, callbacks=[callback, *others], **options)


NO_DROPOUT = {"dropout": 0.0, "input_dropout": 0.0}  # Lightning's checkpoints keep no random generator


def build(method="hat", optimizer="adamw"):
    torch.manual_seed(0)
    gates = maskcl.methods.method_class(method).gates
    net = maskcl.create_model(
        "mlp", input_shape=(12,), classes_per_task=[2, 2], hidden=(16, 16), gates=gates, **NO_DROPOUT
    )
    m = maskcl.create_method(method, net)
    callback = MethodCallback(m)
    return m, Classifier(m.model, callback, optimizer), callback


@pytest.mark.parametrize("method, optimizer", [("hat", "adamw"), ("packnet", "sgd"), ("wsn", "adamw")])
def test_learned_task_outputs_stay_bit_exact(method, optimizer):
    m, module, callback = build(method, optimizer)
    data = loaders()
    probe = torch.randn(10, 12)
    kept = None
    for task in range(2):
        callback.task = task
        trainer(callback, max_epochs=2).fit(module, data[task])
        assert m.state.learned[task] and m.task is None
        m.model.eval()
        with torch.no_grad():
            out = set_task(m.model, 0)(probe)
        if kept is None:
            kept = out
    assert torch.equal(out, kept)


def test_the_gate_scale_follows_optimizer_steps_under_gradient_accumulation():
    m, module, callback = build("hat")
    callback.task = 0
    # 10 batches, an optimizer step every 3: 4 steps an epoch (3, 6, 9 and the last batch)
    trainer(callback, max_epochs=1, accumulate_grad_batches=3).fit(module, loaders()[0])
    s_max = m.config.s_max
    assert m.steps_per_epoch == 4
    assert module.scales[0] == pytest.approx(1 / s_max) and module.scales[-1] == pytest.approx(s_max)
    assert len(set(module.scales[:3])) == 1 and module.scales[3] > module.scales[2]


@pytest.mark.parametrize("method, optimizer", [("hat", "adamw"), ("packnet", "sgd")])
def test_a_fit_resumed_from_a_checkpoint_inside_a_task_ends_bit_exact(tmp_path, method, optimizer):
    """Task 0 resumed from the checkpoint after 2 of its 3 epochs (PackNet has pruned it then, and retrains
    it in the third), then task 1: the same network, bit for bit, as without the stop."""
    data = loaders()

    def learn(folder, resume=None):
        m, module, callback = build(method, optimizer)  # a new process would build everything again
        callback.task = 0
        saving = pl.callbacks.ModelCheckpoint(dirpath=folder, every_n_epochs=1, save_top_k=-1)
        trainer(callback, saving, max_epochs=3).fit(module, data[0], ckpt_path=resume)
        callback.task = 1
        trainer(callback, max_epochs=2).fit(module, data[1])
        return m

    whole = learn(tmp_path / "whole")
    after_two_epochs = tmp_path / "whole" / "epoch=1-step=20.ckpt"
    assert after_two_epochs.exists(), sorted(p.name for p in (tmp_path / "whole").iterdir())
    resumed = learn(tmp_path / "resumed", resume=after_two_epochs)
    assert resumed.state.learned.tolist() == [True, True]
    for (name, a), (_, b) in zip(whole.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name


def test_sharded_strategies_and_sync_batchnorm_are_refused_in_one_line():
    _, module, callback = build("hat")
    callback.task = 0
    # Lightning's FSDP needs a GPU: the callback's check is given a real FSDPStrategy without a Trainer
    holder = types.SimpleNamespace(strategy=pl.strategies.FSDPStrategy())
    with pytest.raises(maskcl.MaskclError, match=r"FSDPStrategy is not supported .* use strategy='ddp'"):
        callback.setup(holder, module, "fit")
    with pytest.raises(maskcl.MaskclError, match="sync_batchnorm is not supported"):
        trainer(callback, max_epochs=1, strategy="ddp", sync_batchnorm=True).fit(module, loaders()[0])
    if torch.distributed.is_initialized():  # the one-rank group that fit made, and its port
        torch.distributed.destroy_process_group()
    assert callback.method.task is None  # nothing started


def test_a_callback_without_a_task_is_a_one_line_error():
    _, module, callback = build("hat")
    with pytest.raises(maskcl.MaskclError, match=r"set callback\.task before trainer\.fit"):
        trainer(callback, max_epochs=1).fit(module, loaders()[0])
    callback.task = 0
    with pytest.raises(maskcl.MaskclError, match="MethodCallback needs max_epochs >= 1"):
        trainer(callback, max_epochs=-1, max_steps=5).fit(module, loaders()[0])


def run_process_group(command: list[str], env: dict, log_path) -> tuple[int, str]:
    """Run ``command`` in a session of its own, its output to ``log_path``; once it exits, whatever it
    started and left (a rank whose peer died waits for it) is killed. Its exit status and output."""
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            code = process.wait(timeout=600)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
    return code, Path(log_path).read_text()


# Lightning's "ddp" strategy starts the other rank by running this script again (not spawn); every rank
# checks task 0's outputs with torch.equal and writes a digest of its network.
DDP_SCRIPT = """
import hashlib, json, sys
import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset
import maskcl
from maskcl.lightning import MethodCallback

method_name, out, precision = sys.argv[1:4]


class Classifier(pl.LightningModule):
    def __init__(self, net, callback):
        super().__init__()
        self.net, self.callback = net, callback

    def training_step(self, batch, _):
        x, y = batch
        return F.cross_entropy(self.net(x), y) + self.callback.regularizer()

    def configure_optimizers(self):
        return torch.optim.AdamW(self.net.parameters(), lr=1e-2, weight_decay=0.01)


torch.manual_seed(0)
gates = maskcl.methods.method_class(method_name).gates
options = {"hidden": (16,), "gates": gates, "dropout": 0.0, "input_dropout": 0.0}
net = maskcl.create_model("mlp", input_shape=(12,), classes_per_task=[2, 2], **options)
method = maskcl.create_method(method_name, net)
callback = MethodCallback(method)
module = Classifier(method.model, callback)
probe = torch.randn(8, 12, generator=torch.Generator().manual_seed(1))
outs = []
for task in range(2):
    g = torch.Generator().manual_seed(task)
    y = torch.randint(0, 2, (96,), generator=g)
    x = torch.randn(96, 12, generator=g) + 2 * y[:, None]
    callback.task = task
    trainer = pl.Trainer(
        accelerator="cpu", devices=2, strategy="ddp", precision=precision, max_epochs=2, callbacks=[callback],
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(module, DataLoader(TensorDataset(x, y), batch_size=8))
    with torch.no_grad():
        outs.append(maskcl.set_task(method.model.eval(), 0)(probe))
state = method.model.state_dict().values()
digest = hashlib.sha256(b"".join(v.detach().numpy().tobytes() for v in state)).hexdigest()
with open(f"{out}/rank-{trainer.global_rank}.json", "w") as f:
    learned = method.state.learned.tolist()
    json.dump({"exact": torch.equal(outs[0], outs[1]), "digest": digest, "learned": learned}, f)
"""


@pytest.mark.parametrize(
    "method, precision", [("hat", "32-true"), ("hat", "bf16-mixed"), ("packnet", "32-true")]
)
def test_ddp_strategy_with_two_cpu_processes_keeps_task_0_exact_on_both_ranks(tmp_path, method, precision):
    script = tmp_path / "fit.py"
    script.write_text(DDP_SCRIPT)
    launched = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if k not in launched}  # a Trainer here may have set them
    command = [sys.executable, str(script), method, str(tmp_path), precision]
    for _attempt in range(3):  # the port Lightning picks can be taken before it binds it: try again
        code, log = run_process_group(command, {**env, "OMP_NUM_THREADS": "1"}, tmp_path / "log.txt")
        if "EADDRINUSE" not in log and "DistNetworkError" not in log:
            break
    assert code == 0, log[-3000:]
    ranks = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert all(r["exact"] and r["learned"] == [True, True] for r in ranks), ranks
    assert ranks[0]["digest"] == ranks[1]["digest"]  # the ranks hold the same network, bit for bit
