"""HyperMask's cached masks: one tensor per learned task (memory and files proportional to what is
learned), state dicts that load into a fresh net bit-exactly, the earlier one-buffer layout, and run
folders whose model files store each task's mask once."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from maskcl import MaskclError, create_model, set_task
from maskcl.checkpoint import load_checkpoint
from maskcl.methods.hypermask import HyperMask, HyperMaskNet

X = torch.randn(16, 6, generator=torch.Generator().manual_seed(1))
Y = torch.tensor([0, 1] * 8)


def fresh() -> HyperMask:
    torch.manual_seed(0)
    target = create_model("mlp", input_shape=(6,), classes_per_task=[2] * 3, hidden=(8, 8), gates=False)
    return HyperMask(target, sparsity=20, chunks=8, lam=0.01, l1_masked=True)


def fresh_net() -> HyperMaskNet:
    return fresh().model


def learn(net: HyperMaskNet, hm: HyperMask, optimizer, task: int, steps: int = 5) -> None:
    net.train()
    hm.start_task(task, optimizer)
    for _ in range(steps):
        loss = F.cross_entropy(set_task(net, task)(X), Y) + hm.regularizer()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    hm.end_task()


def trained(tasks: int) -> tuple[HyperMaskNet, HyperMask, torch.optim.Optimizer]:
    hm = fresh()
    net = hm.model
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    for task in range(tasks):
        learn(net, hm, optimizer, task)
    return net, hm, optimizer


def outputs(net: HyperMaskNet, tasks: int) -> list[torch.Tensor]:
    return [set_task(net.eval(), t)(X) for t in range(tasks)]


def test_the_net_holds_one_mask_per_learned_task_and_none_before():
    for tasks in (0, 1, 2, 3):
        net = trained(tasks)[0]
        masks = dict(net.cached_masks.named_buffers())
        assert sorted(masks) == [str(t) for t in range(tasks)]
        weights = sum(net.sizes)
        assert sum(m.numel() * m.element_size() for m in masks.values()) == tasks * weights * 4
        assert all(m.shape == (weights,) and m.dtype == torch.float32 for m in masks.values())


def test_a_learned_tasks_mask_never_changes_afterwards():
    net, hm, optimizer = trained(1)
    first = net.cached_mask(0)
    kept = first.clone()
    learn(net, hm, optimizer, 1)
    assert net.cached_mask(0) is first and torch.equal(first, kept)


def test_a_state_dict_loads_into_a_fresh_net_and_training_continues_identically():
    net, _, optimizer = trained(2)
    again = fresh()
    loaded = again.model
    loaded.load_state_dict(net.state_dict())
    assert again.state.learned_tasks() == [0, 1]
    for mine, theirs in zip(outputs(net, 2), outputs(loaded, 2)):
        assert torch.equal(mine, theirs)
    moved = torch.optim.Adam(loaded.parameters(), lr=0.01)
    moved.load_state_dict(optimizer.state_dict())
    whole, hm, optimizer = trained(2)
    for model, controller, opt in ((whole, hm, optimizer), (loaded, again, moved)):
        torch.manual_seed(7)  # the same dropout draws for both
        learn(model, controller, opt, 2)
    for mine, theirs in zip(outputs(whole, 3), outputs(loaded, 3)):
        assert torch.equal(mine, theirs)


def test_strict_loading_still_reports_missing_and_unexpected_masks():
    net = trained(2)[0]
    state = net.state_dict()
    del state["cached_masks.1"]
    with pytest.raises(RuntimeError, match=r"Missing key\(s\).*cached_masks\.1"):
        trained(2)[0].load_state_dict(state)
    state = {**net.state_dict(), "cached_masks.x": torch.zeros(1)}
    with pytest.raises(RuntimeError, match=r"Unexpected key\(s\).*cached_masks\.x"):
        fresh_net().load_state_dict(state)


def test_the_earlier_one_buffer_layout_loads_bit_exactly():
    """Run folders written before kept all tasks' masks in one [tasks, W] buffer, zeros for unlearned."""
    net = trained(2)[0]
    state = {k: v for k, v in net.state_dict().items() if not k.startswith("cached_masks.")}
    old = torch.zeros(3, sum(net.sizes))
    old[0], old[1] = net.cached_mask(0), net.cached_mask(1)
    loaded = fresh_net()
    loaded.load_state_dict({**state, "cached_masks": old})
    assert sorted(dict(loaded.cached_masks.named_buffers())) == ["0", "1"]
    for mine, theirs in zip(outputs(net, 2), outputs(loaded, 2)):
        assert torch.equal(mine, theirs)
    with pytest.raises(MaskclError, match="cached_masks of shape"):
        fresh_net().load_state_dict({**state, "cached_masks": old[:, :5]})


def test_a_run_folders_model_files_store_each_mask_once_and_evaluate_exactly(tmp_path):
    from maskcl.cli import main
    from maskcl.runs import load_run

    y = np.arange(600) % 6
    x = (np.random.default_rng(0).integers(0, 60, (600, 6, 6)) + 30 * y[:, None, None]).astype(np.uint8)
    data = tmp_path / "d.npz"
    np.savez(data, x_train=x, y_train=y, x_test=x[:120], y_test=y[:120])
    out = tmp_path / "run"
    args = ["run", "--data", str(data), "--method", "hypermask", "--num-tasks", "3", "--epochs", "1"]
    assert main([*args, "--hidden", "16,16", "--quiet", "--out", str(out)]) == 0
    files = [out / "models" / f"task-{k}.safetensors" for k in range(3)]
    for k, file in enumerate(files):
        state = load_checkpoint(file, kind="model")
        masks = sorted(key for key in state["model"] if key.startswith("cached_masks."))
        assert masks == [f"cached_masks.{k}"]  # only its own task's mask; the others by reference
        assert {state["stored_in"][f"cached_masks.{j}"] for j in range(k + 1)} == set(range(k + 1))
    matrix = json.loads((out / "results.json").read_text())["acc_matrix"]
    from maskcl.runs import load_run_and_scenario
    from maskcl.train import evaluate

    for k in range(3):
        model, scenario = load_run_and_scenario(out, after_task=k)
        accs = [evaluate(model, scenario[j].test, j, torch.device("cpu")) for j in range(k + 1)]
        assert accs == matrix[k][: k + 1]
    assert not load_run(out).training


def test_strict_loading_reports_a_learned_tasks_missing_mask_a_wrong_shape_and_a_task_out_of_range():
    state = trained(2)[0].state_dict()
    weights = sum(fresh_net().sizes)
    del state["cached_masks.1"]  # task 1 is marked learned in the state: its mask must be there
    with pytest.raises(RuntimeError, match=r"Missing key\(s\).*cached_masks\.1"):
        fresh_net().load_state_dict(state)
    state["cached_masks.1"] = torch.zeros(weights - 1)
    with pytest.raises(RuntimeError, match=r"size mismatch for cached_masks\.1"):
        fresh_net().load_state_dict(state)
    state["cached_masks.1"] = torch.zeros(weights)
    with pytest.raises(RuntimeError, match=r"Unexpected key\(s\).*cached_masks\.7"):
        fresh_net().load_state_dict({**state, "cached_masks.7": torch.zeros(weights)})  # 3 tasks: 0-2


def test_loading_holds_exactly_the_states_masks_in_new_tensors():
    net = trained(3)[0]
    masks = [net.cached_mask(t) for t in range(3)]
    kept = [m.clone() for m in masks]
    net.load_state_dict(trained(1)[0].state_dict())
    assert sorted(dict(net.cached_masks.named_buffers())) == ["0"]
    assert net.cached_mask(0) is not masks[0]
    assert all(torch.equal(m, k) for m, k in zip(masks, kept))  # the earlier tensors were not written to


def test_the_earlier_layout_needs_the_learned_tasks_to_pick_its_rows():
    net = trained(2)[0]
    state = {k: v for k, v in net.state_dict().items() if not k.startswith("cached_masks.")}
    state = {k: v for k, v in state.items() if not k.endswith(".learned")}
    with pytest.raises(MaskclError, match="no target's learned tasks"):
        fresh_net().load_state_dict({**state, "cached_masks": torch.zeros(3, sum(net.sizes))}, strict=False)
