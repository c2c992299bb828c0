"""Models layer: shapes, in-model normalization, channels_last, registry errors, safe save/load. Forward passes only."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from unpoison.errors import UnpoisonError
from unpoison.models import MODELS, ImageClassifier, create_model, list_models, load_model, save_model

ALL = ["fastnet", "preact_resnet18", "resnet18", "resnet20", "resnet32", "vgg16_bn"]


def small(name: str, **kw) -> ImageClassifier:
    torch.manual_seed(0)
    return create_model(name, width=0.25, **kw).eval()


def images(n: int = 2, c: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(seed))


def test_all_archs_registered():
    assert list_models() == ALL and all(n in MODELS for n in ALL)


@pytest.mark.parametrize("name", ALL)
def test_shapes_channels_last_and_contract(name):
    x = images()
    for k in (10, 43):
        m = small(name, num_classes=k)
        assert isinstance(m, ImageClassifier) and m.arch == name and m.num_classes == k and m.in_channels == 3
        assert isinstance(m.head, torch.nn.Linear) and m.head.in_features == m.feature_dim
        with torch.no_grad():
            out, feats = m(x), m.features(x)
            assert out.shape == (2, k) and feats.shape == (2, m.feature_dim)
            assert m.feature_map(x).shape[:2] == (2, m.feature_dim)
            torch.testing.assert_close(m.head(feats), out)  # forward is exactly head ∘ features
            cl = m.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
            torch.testing.assert_close(cl, out, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["fastnet", "resnet18", "vgg16_bn"])
def test_other_sizes_and_grayscale(name):
    with torch.no_grad():
        assert small(name)(images(size=64)).shape == (2, 10)
        m = small(name, in_channels=1, num_classes=5)
        assert m.mean == (0.5,) and m.std == (0.25,)
        assert m(images(c=1)).shape == (2, 5)


def test_width_scales_channels_and_fastnet_defaults():
    assert create_model("resnet18", width=0.25).feature_dim == 128
    assert create_model("resnet20", width=0.01).feature_dim == 1  # rounded, never 0
    m = create_model("fastnet", width=0.5)
    assert m.feature_dim == 128 and m.head.bias is None and m.logit_scale == pytest.approx(1 / 9)
    assert all(b.momentum == 0.1 for b in m.modules() if isinstance(b, torch.nn.BatchNorm2d))
    m = create_model("fastnet", width=0.25, widths=(8, 16, 24), bn_momentum=0.4, logit_scale=1.0)
    assert m.feature_dim == 6 and m.kwargs["widths"] == [8, 16, 24] and m.kwargs["bn_momentum"] == 0.4
    with torch.no_grad():  # 3 pools: 8×8 is the smallest input
        assert m.eval()(images(size=8)).shape == (2, 10)


def test_normalization_happens_inside():
    m = small("resnet20")
    x = images()
    with torch.no_grad():
        z = (x - torch.tensor(m.mean).view(1, 3, 1, 1)) / torch.tensor(m.std).view(1, 3, 1, 1)
        manual = m.head(m.pool(m._forward_map(z)).flatten(1))
        torch.testing.assert_close(m(x), manual)
        other = small("resnet20", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
        assert other.state_dict().keys() == m.state_dict().keys()
        other.load_state_dict(m.state_dict())  # same weights, other normalization → other output
        assert not torch.allclose(other(x), m(x))
        torch.testing.assert_close(other(z), m(x), atol=1e-5, rtol=1e-4)


def test_bad_arguments_raise_one_line_errors():
    with pytest.raises(UnpoisonError, match="unknown model 'resnet9000'; known: fastnet, preact_resnet18"):
        create_model("resnet9000")
    with pytest.raises(UnpoisonError, match="num_classes"):
        create_model("fastnet", num_classes=1)
    with pytest.raises(UnpoisonError, match="in_channels"):
        create_model("fastnet", in_channels=4)
    with pytest.raises(UnpoisonError, match="width"):
        create_model("resnet20", width=0)
    with pytest.raises(UnpoisonError, match="'depth'.*accepted: width"):
        create_model("resnet20", depth=3)
    with pytest.raises(UnpoisonError, match="mean must be 1"):
        create_model("resnet20", in_channels=1, mean=(0.1, 0.2, 0.3))
    with pytest.raises(UnpoisonError, match="widths"):
        create_model("fastnet", widths=(8, 16))
    with pytest.raises(UnpoisonError, match=r"shape \(N, 3, H, W\)"):
        small("resnet20")(images(c=1))
    with pytest.raises(UnpoisonError, match="float images"):
        small("resnet20")((images() * 255).to(torch.uint8))


@pytest.mark.parametrize("name", ALL)
def test_save_load_round_trip(tmp_path, name):
    m = small(name, num_classes=7)
    m.train()
    with torch.no_grad():
        m(images(4))  # move BN running stats off their defaults so the round trip has something to prove
    m.eval()
    p = tmp_path / "m.safetensors"
    save_model(m.to(memory_format=torch.channels_last), p, extra={"class_names": list("abcdefg")})
    m2, info = load_model(p)
    assert not m2.training and type(m2) is type(m)
    assert info["arch"] == name and info["num_classes"] == 7 and info["kwargs"] == m.kwargs == m2.kwargs
    assert info["class_names"] == list("abcdefg") and m2.mean == m.mean
    assert json.loads(p.with_suffix(".json").read_text()) == info
    x = images(seed=1)
    with torch.no_grad():
        torch.testing.assert_close(m2(x), m(x), atol=1e-6, rtol=1e-5)
    assert sorted(q.name for q in tmp_path.iterdir()) == ["m.json", "m.safetensors"]  # no temp files left


def test_saving_the_same_model_twice_writes_the_same_bytes(tmp_path):
    # safetensors writes several metadata keys in a random order; with two keys, six saves would agree by chance
    # with probability 1/32
    m = small("resnet20").eval()
    paths = [tmp_path / f"m{i}.safetensors" for i in range(6)]
    for p in paths:
        save_model(m, p, extra={"class_names": list("abcdefghij")})
    assert len({p.read_bytes() for p in paths}) == 1


def test_custom_normalization_survives_round_trip(tmp_path):
    m = small("fastnet", in_channels=1, mean=(0.2,), std=(0.3,), logit_scale=0.5)
    save_model(m, tmp_path / "g.safetensors")
    m2, info = load_model(tmp_path / "g.safetensors")
    assert m2.mean == (0.2,) and m2.std == (0.3,) and m2.logit_scale == 0.5 and info["in_channels"] == 1


def _rewrite(src, dst, **changes) -> None:
    """Copy a model file, changing fields of its 'unpoison' metadata."""
    with safe_open(str(src), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    info = json.loads(meta["unpoison"]) | changes
    save_file(tensors, str(dst), metadata=meta | {"unpoison": json.dumps(info)})


def test_bad_model_files_raise_one_line_errors(tmp_path):
    good = tmp_path / "r20.safetensors"
    save_model(small("resnet20"), good)

    def fails(path, pattern):
        with pytest.raises(UnpoisonError, match=pattern) as e:
            load_model(path)
        assert "\n" not in str(e.value)

    fails(tmp_path / "nope.safetensors", "not found")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(torch.randint(0, 256, (1000,), generator=torch.Generator().manual_seed(0),
                                   dtype=torch.uint8).numpy().tobytes())
    fails(junk, "not a readable safetensors file")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[:-100])
    fails(cut, "not a readable safetensors file")
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    fails(plain, "not an unpoison model")
    _rewrite(good, tmp_path / "r32.safetensors", arch="resnet32")
    fails(tmp_path / "r32.safetensors", r"do not match resnet32.*missing key\(s\), first 'stages\.0\.3\.")
    _rewrite(good, tmp_path / "k43.safetensors", num_classes=43)
    fails(tmp_path / "k43.safetensors", r"shape mismatch at 'head\.weight': file \(10, 16\), model \(43, 16\)")
    _rewrite(good, tmp_path / "arch.safetensors", arch="alexnet")
    fails(tmp_path / "arch.safetensors", "unknown model 'alexnet'; known: fastnet")
    _rewrite(good, tmp_path / "v2.safetensors", version=2)
    fails(tmp_path / "v2.safetensors", "version 2")
    _rewrite(good, tmp_path / "kw.safetensors", kwargs={"width": 0.25, "depth": 3})
    fails(tmp_path / "kw.safetensors", "cannot rebuild.*'depth'")


def test_save_refuses_reserved_extra_keys_and_json_path(tmp_path):
    m = small("resnet20")
    with pytest.raises(UnpoisonError, match="arch"):
        save_model(m, tmp_path / "a.safetensors", extra={"arch": "x"})
    with pytest.raises(UnpoisonError, match=r"\.json"):
        save_model(m, tmp_path / "a.json")
    with pytest.raises(UnpoisonError, match=r"\.json"):  # the path is reported first, not the extra after it
        save_model(m, tmp_path / "a.json", extra={"arch": "x"})
    assert list(tmp_path.iterdir()) == []
