import numpy as np
import pytest
import torch

from unpoison.data import stratified_subset
from unpoison.errors import UnpoisonError
from unpoison.training import TRAIN_TRANSFORMS, TrainConfig, Trainer, evaluate_accuracy, lr_at, train_on

TINY = dict(arch="fastnet", width=0.25, batch_size=64, lr=0.2)


def test_lr_schedule_shapes():
    cfg = TrainConfig(lr=1.0, warmup=0.2, schedule="onecycle")
    assert lr_at(0, 100, cfg) == pytest.approx(0.1)
    assert lr_at(20, 100, cfg) == pytest.approx(1.0)
    assert lr_at(60, 100, cfg) == pytest.approx(0.5)
    assert lr_at(100, 100, cfg) == pytest.approx(0.0)
    cos = TrainConfig(lr=1.0, warmup=0.0, schedule="cosine")
    assert lr_at(50, 100, cos) == pytest.approx(0.5)


def test_config_validation_and_presets():
    assert TrainConfig.from_dict(preset="standard").epochs > TrainConfig.from_dict(preset="quick").epochs
    with pytest.raises(UnpoisonError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(UnpoisonError, match="unknown preset"):
        TrainConfig.from_dict(preset="turbo")


def test_learns_real_cifar_well_above_chance(cifar_train, cifar_test_small):
    train = stratified_subset(cifar_train, per_class=200, seed=0)
    cfg = TrainConfig(**TINY | {"width": 0.5, "epochs": 5})
    res = Trainer(cfg, device="cpu").fit(train, test=cifar_test_small, seed=0)
    # chance is 10%; 2,000 images and 5 short epochs reach well above it
    assert res.test_acc is not None and res.test_acc > 0.35, res.test_acc
    assert res.history[-1].train_acc > res.history[0].train_acc
    assert len(res.history) == 5 and all(h.images_per_s > 0 for h in res.history)


def test_same_seed_same_model_and_resume_equals_uninterrupted(cifar_small, tmp_path):
    cfg = TrainConfig(**TINY | {"epochs": 3})
    full = Trainer(cfg, device="cpu").fit(cifar_small, seed=3)
    again = Trainer(cfg, device="cpu").fit(cifar_small, seed=3)
    ck = tmp_path / "ck.safetensors"
    part = Trainer(cfg, device="cpu", checkpoint=ck).fit(cifar_small, seed=3, stop_after=1)
    assert part.test_acc is None and len(part.history) == 1 and ck.exists()
    resumed = Trainer(cfg, device="cpu", checkpoint=ck).fit(cifar_small, seed=3)
    assert resumed.resumed_from_epoch == 1 and len(resumed.history) == 3
    sd_full, sd_again, sd_res = (m.model.state_dict() for m in (full, again, resumed))
    for k in sd_full:
        assert torch.equal(sd_full[k], sd_again[k]), k
        assert torch.equal(sd_full[k], sd_res[k]), k
    other = Trainer(cfg, device="cpu").fit(cifar_small, seed=4).model.state_dict()
    assert any(not torch.equal(sd_full[k], other[k]) for k in sd_full)


def test_checkpoint_of_another_run_is_refused(cifar_small, tmp_path):
    cfg = TrainConfig(**TINY | {"epochs": 2})
    ck = tmp_path / "ck.safetensors"
    Trainer(cfg, device="cpu", checkpoint=ck).fit(cifar_small, seed=0, stop_after=1)
    with pytest.raises(UnpoisonError, match="another run"):
        Trainer(cfg.replace(lr=0.1), device="cpu", checkpoint=ck).fit(cifar_small, seed=0)
    ck.write_bytes(b"garbage")
    with pytest.raises(UnpoisonError, match="safetensors"):
        Trainer(cfg, device="cpu", checkpoint=ck).fit(cifar_small, seed=0)


def test_hooks_transform_and_loss_are_used(cifar_small):
    seen = {"tf": 0, "loss": 0}

    def tf(x, g):
        seen["tf"] += 1
        assert x.dtype == torch.float32 and 0 <= float(x.min()) and float(x.max()) <= 1
        return x

    def loss(out, y):
        seen["loss"] += 1
        return torch.nn.functional.cross_entropy(out, y)

    cfg = TrainConfig(**TINY | {"epochs": 1})
    Trainer(cfg, device="cpu", batch_transform=tf, loss_fn=loss).fit(cifar_small, seed=0)
    assert seen["tf"] == seen["loss"] == 8  # 500 images / 64 → 7 full batches + a tail of 52


def test_dataset_transform_applied_per_epoch_once_or_off(cifar_small):
    calls = []

    def factory(value: float):
        def tf(x, g):
            calls.append(len(x))
            return torch.full_like(x, value)
        return tf

    if "test_constant" not in TRAIN_TRANSFORMS:
        TRAIN_TRANSFORMS.register("test_constant", factory)
    ds = cifar_small.with_images(cifar_small.images,
                                 train_transform={"name": "test_constant", "params": {"value": 0.5}})
    cfg = TrainConfig(**TINY | {"epochs": 2})
    train_on(ds, cfg, seed=0, device="cpu")
    assert len(calls) == 16  # every batch of both epochs
    calls.clear()
    train_on(ds, cfg, seed=0, device="cpu", train_transform="once")
    assert sum(calls) == len(ds)  # the whole set, once, before training
    calls.clear()
    train_on(ds, cfg, seed=0, device="cpu", train_transform="off")
    assert calls == []


def test_evaluate_accuracy_matches_manual(cifar_small):
    cfg = TrainConfig(**TINY | {"epochs": 1})
    model = Trainer(cfg, device="cpu").fit(cifar_small, seed=0).model
    with torch.no_grad():
        x = torch.from_numpy(cifar_small.images).permute(0, 3, 1, 2).float() / 255
        manual = float((model(x).argmax(1).numpy() == cifar_small.labels).mean())
    assert evaluate_accuracy(model, cifar_small, batch_size=77) == pytest.approx(manual)
    assert isinstance(np.float64(manual), np.floating)


def test_amp_auto_resolves_by_device_and_is_recorded(cifar_small, monkeypatch):
    from unpoison.utils import device as tr

    cpu = torch.device("cpu")
    monkeypatch.setattr(tr, "cpu_has_amx_bf16", lambda: False)
    assert tr.autocast_dtype("auto", cpu) is None  # bf16 without AMX runs at 0.08x fp32
    assert tr.autocast_dtype("bf16", cpu) is torch.bfloat16
    monkeypatch.setattr(tr, "cpu_has_amx_bf16", lambda: True)
    assert tr.autocast_dtype("auto", cpu) is torch.bfloat16
    assert tr.autocast_dtype("off", cpu) is None
    assert tr.autocast_dtype("auto", torch.device("cuda")) is torch.bfloat16
    small = stratified_subset(cifar_small, per_class=6, seed=0)
    r = Trainer(TrainConfig(**TINY, epochs=1, amp="bf16")).fit(small, seed=0)
    assert r.precision == "bf16" and r.to_dict()["precision"] == "bf16"
    assert Trainer(TrainConfig(**TINY, epochs=1, amp="off")).fit(small, seed=0).precision == "fp32"
