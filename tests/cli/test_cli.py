"""The CLI end to end, in-process: outputs, JSON, and one-line errors with exit status 2 for bad input."""

import json

import numpy as np
import pytest

from unpoison.cli.main import main
from unpoison.data import load_dataset, save_dataset, stratified_subset


def run(capsys, *argv):
    with pytest.raises(SystemExit) as e:
        main(list(argv))
    out, err = capsys.readouterr()
    return e.value.code or 0, out, err


def assert_bad_input(code, err, match):
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and match in err, err


@pytest.fixture(scope="module")
def small_npz(cifar_small, tmp_path_factory):
    p = tmp_path_factory.mktemp("cli") / "small.npz"
    save_dataset(stratified_subset(cifar_small, per_class=20, seed=0), p)
    return p


@pytest.mark.parametrize("cmd", [[], ["attack"], ["purify"], ["train"], ["evaluate"], ["data"], ["data", "info"],
                                 ["data", "export"], ["data", "subset"], ["demo"], ["models"]])
def test_help_everywhere(capsys, cmd):
    code, out, _ = run(capsys, *cmd, "--help")
    assert code == 0 and "Usage" in out


def test_attack_help_lists_attacks_with_parameters(capsys):
    _, out, _ = run(capsys, "attack", "--help")
    assert "lsp" in out and "badnets" in out and "budget=1.3" in out and "poison_rate=" in out


def test_purify_help_lists_purifiers(capsys):
    _, out, _ = run(capsys, "purify", "--help")
    assert "jpeg" in out and "grayscale" in out and "bdr" in out and "quality=10" in out


def test_purify_preset_is_applied_under_config_and_set(capsys, tmp_path, small_npz):
    """--preset paper starts from the published values (D-VAE's κ₂ = 3 against the CPU default 6); --set wins over
    it; an unknown preset, or one the method lacks, is a one-line error with status 2 and writes nothing."""
    out = tmp_path / "p.npz"
    tiny = ["--set", "width=8", "--set", "feat_channels=8", "--set", "latent_channels=8", "--set", "dec_widths=[8,4]",
            "--set", "epochs=1", "--set", "batch_size=64"]
    code, o, err = run(capsys, "purify", "dvae", "--data", str(small_npz), "--out", str(out), "--preset", "paper",
                       *tiny, "--json")
    assert code == 0, err
    params = json.loads(o)["params"]
    assert params["kappa2"] == 3.0 and params["width"] == 8 and params["epochs"] == 1
    assert params["stage2_epochs"] == 0  # the paper trains both stages the same epochs, whatever the CPU default
    for name, preset in (("dvae", "nope"), ("jpeg", "paper")):
        bad = tmp_path / f"{name}-{preset}.npz"
        code, _, err = run(capsys, "purify", name, "--data", str(small_npz), "--out", str(bad), "--preset", preset)
        assert_bad_input(code, err, "unknown preset")
        assert not bad.exists()
    code, _, err = run(capsys, "attack", "lsp", "--data", str(small_npz), "--out", str(tmp_path / "a.npz"),
                       "--preset", "paper")  # attacks take --preset too; LSP has none
    assert_bad_input(code, err, "unknown preset")


def test_data_info_json(capsys, data_root):
    code, out, _ = run(capsys, "data", "info", "cifar10:test", "--json", "--data-root", str(data_root))
    info = json.loads(out)
    assert code == 0 and info["size"] == 10000 and info["class_counts"] == [1000] * 10 and not info["poisoned"]


def test_subset_then_refuse_to_overwrite(capsys, tmp_path, data_root):
    out_file = tmp_path / "sub.npz"
    code, _, _ = run(capsys, "data", "subset", "cifar10:test", "--per-class", "3", "--out", str(out_file),
                     "--data-root", str(data_root))
    assert code == 0 and len(load_dataset(out_file)) == 30
    before = out_file.read_bytes()
    code, _, err = run(capsys, "data", "subset", "cifar10:test", "--per-class", "4", "--out", str(out_file),
                       "--data-root", str(data_root))
    assert_bad_input(code, err, "already exists")
    assert out_file.read_bytes() == before


def test_attack_purify_train_evaluate_pipeline(capsys, tmp_path, small_npz, data_root):
    pois = tmp_path / "lsp.npz"
    code, out, err = run(capsys, "attack", "lsp", "--data", str(small_npz), "--out", str(pois), "--json")
    assert code == 0, err
    assert json.loads(out)["poison_count"] == 200
    pur = tmp_path / "jpeg.npz"
    code, out, err = run(capsys, "purify", "jpeg", "--data", str(pois), "--out", str(pur), "--set", "quality=20",
                         "--json")
    assert code == 0, err and json.loads(out)["params"]["quality"] == 20
    assert load_dataset(pur).is_poison.all()
    model = tmp_path / "m.safetensors"
    code, out, err = run(capsys, "train", "--data", str(pur), "--out", str(model), "--epochs", "1",
                         "--set", "width=0.25", "--set", "batch_size=50", "--no-progress", "--json")
    assert code == 0, err
    assert model.exists() and model.with_suffix(".json").exists()
    code, out, err = run(capsys, "evaluate", "--model", str(model), "--test", "cifar10:test", "--json",
                         "--data-root", str(data_root))
    res = json.loads(out)
    assert code == 0 and 0.0 <= res["clean_acc"] <= 1.0 and res["n_test"] == 10000


def test_evaluate_backdoor_reports_asr(capsys, tmp_path, small_npz, data_root):
    bd = tmp_path / "bd.npz"
    code, _, err = run(capsys, "attack", "badnets", "--data", str(small_npz), "--out", str(bd),
                       "--set", "poison_rate=0.1", "--set", "target=0")
    assert code == 0, err
    model = tmp_path / "m.safetensors"
    code, _, err = run(capsys, "train", "--data", str(bd), "--out", str(model), "--epochs", "1",
                       "--set", "width=0.25", "--no-progress")
    assert code == 0, err
    code, out, err = run(capsys, "evaluate", "--model", str(model), "--test", "cifar10:test", "--backdoor", str(bd),
                         "--json", "--data-root", str(data_root))
    res = json.loads(out)
    assert code == 0, err
    assert {"clean_acc", "asr", "robust_acc"} <= set(res) and res["n_triggered"] == 9000


def test_bad_inputs_exit_2_with_one_line(capsys, tmp_path, small_npz, data_root):
    missing = tmp_path / "missing.npz"
    assert_bad_input(*run(capsys, "data", "info", str(missing))[::2], "not found")
    np.savez(tmp_path / "pickled.npz", x=np.array([object()], dtype=object))
    assert_bad_input(*run(capsys, "data", "info", str(tmp_path / "pickled.npz"))[::2], "pickled")
    (tmp_path / "trunc.npz").write_bytes(small_npz.read_bytes()[:1000])
    assert_bad_input(*run(capsys, "data", "info", str(tmp_path / "trunc.npz"))[::2], "truncated")
    assert_bad_input(*run(capsys, "attack", "nosuch", "--data", str(small_npz), "--out",
                          str(tmp_path / "o.npz"))[::2], "unknown attack")
    assert_bad_input(*run(capsys, "attack", "lsp", "--data", str(small_npz), "--out", str(tmp_path / "o.npz"),
                          "--set", "budget=-1")[::2], "budget")
    assert_bad_input(*run(capsys, "attack", "lsp", "--data", str(small_npz), "--out", str(tmp_path / "o.npz"),
                          "--set", "bogus=1")[::2], "unknown parameter")
    assert not (tmp_path / "o.npz").exists()
    notmodel = tmp_path / "m.safetensors"
    notmodel.write_bytes(b"not a model at all")
    assert_bad_input(*run(capsys, "evaluate", "--model", str(notmodel), "--test", "cifar10:test",
                          "--data-root", str(data_root))[::2], "safetensors")


def test_model_for_other_dataset_is_refused(capsys, tmp_path, data_root):
    from unpoison.models import create_model, save_model

    p = tmp_path / "m10.safetensors"
    save_model(create_model("fastnet", num_classes=10, width=0.25), p)
    assert_bad_input(*run(capsys, "evaluate", "--model", str(p), "--test", "gtsrb:test",
                          "--data-root", str(data_root))[::2], "43 classes")


# The smallest settings of the surrogate attacks (one step, a tiny surrogate): the command, not the attack's efficacy.
SMALL = {"em": ["pgd_steps=1", "train_steps=1", "max_rounds=1"],
         "rem": ["pgd_steps=1", "adv_steps=1", "eot_samples=1", "train_steps=1", "rounds=1"],
         "tap": ["steps=1", "surrogate_epochs=1"], "sep": ["steps=1", "surrogate_epochs=2", "num_models=2"],
         "lc": ["steps=1", "surrogate_epochs=1"]}
SURROGATE = ["width=0.125", "batch_size=100", "progress=false", "device=cpu", "cache=false"]


def _attack_names():
    from unpoison.attacks import ATTACKS

    return ATTACKS.names()


@pytest.mark.parametrize("name", _attack_names())
def test_every_attack_runs_from_the_command_line(capsys, tmp_path, small_npz, name):
    from unpoison.data import PoisonedDataset

    _, helptext, _ = run(capsys, "attack", "--help")
    assert name in helptext  # listed, with its parameters (checked for lsp/badnets above)
    sets = [a for s in (SMALL[name] + SURROGATE if name in SMALL else []) for a in ("--set", s)]
    out = tmp_path / f"{name}.npz"
    code, res, err = run(capsys, "attack", name, "--data", str(small_npz), "--out", str(out), "--json", *sets)
    assert code == 0, err
    pds = load_dataset(out)
    assert isinstance(pds, PoisonedDataset) and pds.attack["name"] == name
    assert json.loads(res)["poison_count"] == int(pds.is_poison.sum()) > 0
    changed = (pds.images != load_dataset(small_npz).images).reshape(len(pds), -1).any(1)
    cover = pds.is_cover if pds.is_cover is not None else np.zeros(len(pds), dtype=bool)
    assert not changed[~pds.is_poison & ~cover].any()  # nothing outside the marked samples is touched
    assert changed[pds.is_poison].mean() > 0.9  # (a sample-wise perturbation may round to zero on a few images)
