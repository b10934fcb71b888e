"""The training loop: seeded reproducibility, checkpoint/resume, the logits it trains, the baseline init."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

pytest.importorskip("torch")

from examples.make_models import lenet5  # noqa: E402
from helpers import example_model, initializers  # noqa: E402
from mirrorc.errors import MirrorcError  # noqa: E402
from mirrorc.train.loop import TrainConfig, logits_tensor, same_init, split_validation, train  # noqa: E402


def tiny_data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 10).astype(np.int64)
    x = rng.standard_normal((n, 1, 28, 28)).astype(np.float32) * 0.5
    x[np.arange(n), 0, y, y] += 3.0  # a learnable signal: a bright pixel on the diagonal per class
    return x, y


def test_same_seed_same_weights_other_seed_differs():
    x, y = tiny_data()
    cfg = dict(epochs=2, batch_size=16, lr=3e-3)
    a = train(example_model("lenet5"), x, y, TrainConfig(seed=1, **cfg))
    b = train(example_model("lenet5"), x, y, TrainConfig(seed=1, **cfg))
    c = train(example_model("lenet5"), x, y, TrainConfig(seed=2, **cfg))
    wa, wb, wc = initializers(a.model), initializers(b.model), initializers(c.model)
    assert all(np.array_equal(wa[k], wb[k]) for k in wa)
    assert any(not np.array_equal(wa[k], wc[k]) for k in wa)
    assert any(not np.array_equal(wa[k], v) for k, v in initializers(example_model("lenet5")).items())  # it did train
    assert a.history[-1].loss < a.history[0].loss


def test_resume_continues_exactly(tmp_path):
    x, y = tiny_data()
    straight = train(example_model("lenet5"), x, y, TrainConfig(epochs=3, batch_size=16, seed=0))
    ckpt = tmp_path / "ck.pt"
    train(example_model("lenet5"), x, y, TrainConfig(epochs=1, batch_size=16, seed=0), checkpoint=ckpt, fingerprint="m")
    resumed = train(
        example_model("lenet5"),
        x,
        y,
        TrainConfig(epochs=3, batch_size=16, seed=0),
        checkpoint=ckpt,
        resume=True,
        fingerprint="m",
    )
    assert [h.epoch for h in resumed.history] == [1, 2, 3]
    ws, wr = initializers(straight.model), initializers(resumed.model)
    diff = max(float(np.abs(ws[k] - wr[k]).max()) for k in ws)
    print("resume vs straight: max weight difference", diff)
    assert diff == 0.0
    with pytest.raises(MirrorcError, match="another model"):
        train(
            example_model("lenet5"),
            x,
            y,
            TrainConfig(epochs=3, batch_size=16),
            checkpoint=ckpt,
            resume=True,
            fingerprint="x",
        )
    with pytest.raises(MirrorcError, match="different options"):
        train(
            example_model("lenet5"),
            x,
            y,
            TrainConfig(epochs=3, batch_size=32),
            checkpoint=ckpt,
            resume=True,
            fingerprint="m",
        )


def test_cosine_schedule_decays_to_zero_and_resumes_exactly(tmp_path):
    import torch

    x, y = tiny_data()
    cfg = TrainConfig(epochs=3, batch_size=16, seed=0, lr=3e-3, lr_schedule="cosine")
    straight = train(example_model("lenet5"), x, y, cfg)
    constant = train(example_model("lenet5"), x, y, replace(cfg, lr_schedule="constant"))
    ws = initializers(straight.model)
    assert any(not np.array_equal(ws[k], v) for k, v in initializers(constant.model).items())

    def crash_in_epoch_2(line):
        if " epoch 2/" in line:
            raise KeyboardInterrupt

    ckpt = tmp_path / "ck.pt"
    with pytest.raises(KeyboardInterrupt):
        train(example_model("lenet5"), x, y, cfg, checkpoint=ckpt, fingerprint="m", log=crash_in_epoch_2)
    assert torch.load(ckpt, weights_only=False)["epoch"] == 1
    resumed = train(example_model("lenet5"), x, y, cfg, checkpoint=ckpt, resume=True, fingerprint="m")
    wr = initializers(resumed.model)
    diff = max(float(np.abs(ws[k] - wr[k]).max()) for k in ws)
    print("cosine, resume vs straight: max weight difference", diff)
    assert diff == 0.0
    last_lr = torch.load(ckpt, weights_only=False)["optimizer"]["param_groups"][0]["lr"]
    assert last_lr < 1e-9  # the schedule ends at 0 after the last batch
    with pytest.raises(MirrorcError, match="--lr-schedule"):
        TrainConfig(lr_schedule="step").check()


def test_logits_tensor_skips_softmax_and_identity():
    assert logits_tensor(example_model("lenet5")) == "fc12_out"


def test_penalty_needs_a_backbone_and_config_is_checked():
    x, y = tiny_data(20)
    with pytest.raises(MirrorcError, match="--backbone-penalty"):
        train(example_model("lenet5"), x, y, TrainConfig(epochs=1, backbone_penalty=1.0))
    with pytest.raises(MirrorcError, match="--batch-size"):
        train(example_model("lenet5"), x, y, TrainConfig(epochs=1, batch_size=0))


def test_validation_split_is_disjoint_and_seeded():
    tr, va = split_validation(100, 0.1, 3)
    assert len(va) == 10 and not set(tr) & set(va) and len(tr) + len(va) == 100
    assert np.array_equal(va, split_validation(100, 0.1, 3)[1])


def test_same_init_copies_backbone_weights():
    src, other = example_model("lenet5"), lenet5(seed=5)
    out = same_init(other, src)
    assert all(np.array_equal(v, initializers(src)[k]) for k, v in initializers(out).items())


def test_without_torch_the_message_says_how_to_install(monkeypatch):
    import sys

    from mirrorc.train.loop import require_torch

    monkeypatch.setitem(sys.modules, "torch", None)  # what an environment without torch looks like
    with pytest.raises(MirrorcError, match=r"pip install torch==2\.13\.0.*mirrorc\[train\]"):
        require_torch()


class _RunsCode:
    """Unpickling this calls os.system: what a planted "checkpoint" could do under a full unpickler."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_planted_checkpoints_are_refused_without_running_code(tmp_path):
    import pickle

    import torch

    x, y = tiny_data(32)
    marker = tmp_path / "code_ran"
    planted = {
        "a pickle that runs code": pickle.dumps({"fingerprint": "m", "x": _RunsCode(str(marker))}, protocol=2),
        "random bytes": np.random.default_rng(0).bytes(4096),
        "empty file": b"",
    }
    for field_case, state in {
        "a list": [1, 2, 3],
        "no fingerprint": {"epoch": 1},
        "epoch as text": {
            "epoch": "1",
            "module": {},
            "optimizer": {},
            "scheduler": {},
            "history": [],
            "config": {},
            "outputs": [],
            "fingerprint": "m",
        },
    }.items():
        torch.save(state, tmp_path / "t.pt")
        planted[field_case] = (tmp_path / "t.pt").read_bytes()
    ckpt = tmp_path / "ck.pt"
    for case, data in planted.items():
        ckpt.write_bytes(data)
        with pytest.raises(MirrorcError) as e:
            train(
                example_model("lenet5"),
                x,
                y,
                TrainConfig(epochs=1, batch_size=16),
                checkpoint=ckpt,
                resume=True,
                fingerprint="m",
            )
        message = str(e.value)
        print(f"{case}: {message}")
        assert message.startswith(f"{ckpt}: not a mirrorc checkpoint") and "\n" not in message, case
    assert not marker.exists(), "unpickling the planted checkpoint ran its code"


def test_checkpoint_that_does_not_fit_the_model_is_refused(tmp_path):
    x, y = tiny_data(32)
    ckpt = tmp_path / "ck.pt"
    train(example_model("lenet5"), x, y, TrainConfig(epochs=1, batch_size=16), checkpoint=ckpt, fingerprint="m")
    import torch

    state = torch.load(ckpt, weights_only=True)
    name = next(iter(state["module"]))
    state["module"][name] = torch.zeros(3)  # a tensor of another shape under a right name
    torch.save(state, ckpt)
    with pytest.raises(MirrorcError, match="checkpoint does not fit the model") as e:
        train(
            example_model("lenet5"),
            x,
            y,
            TrainConfig(epochs=2, batch_size=16),
            checkpoint=ckpt,
            resume=True,
            fingerprint="m",
        )
    assert "\n" not in str(e.value)


def test_gathered_batches_through_loader_workers_are_the_indexed_batches():
    """The CUDA path's DataLoader (worker processes, here without pinning: no GPU) yields exactly
    x[idx], y[idx] for each index batch, in the batches' order."""
    import torch

    from mirrorc.train.loop import gathered

    x, y = tiny_data(50)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    order = torch.randperm(50, generator=torch.Generator().manual_seed(3))
    batches = [order[s : s + 16] for s in range(0, 50, 16)]
    got = list(gathered(xt, yt, iter(batches), workers=2, pin=False))
    assert len(got) == len(batches) == 4 and len(got[-1][1]) == 2
    largest = max(float((xb - xt[idx]).abs().max()) for (xb, _), idx in zip(got, batches))
    print(f"largest difference, loader batch vs indexed batch: {largest}")
    assert largest == 0.0 and all(torch.equal(yb, yt[idx]) for (_, yb), idx in zip(got, batches))
