"""The improved-DDPM diffusion: schedule values, closed-form noising, one reverse step and the hybrid loss against
hand computations, respacing, samplers with an oracle model, EMA, model files and UNet presets."""

import math

import pytest
import torch

from unpoison.errors import UnpoisonError
from unpoison.models.diffusion import (EMA, GaussianDiffusion, build_unet, count_params,
                                       discretized_gaussian_log_likelihood, load_diffusion, normal_kl, purify_batch,
                                       reverse_process, save_diffusion, spaced_steps)

T = 4000


@pytest.fixture(scope="module")
def diff():
    return GaussianDiffusion.cosine(T)


def _alpha_bar(t):  # improved DDPM's f(t)/f(0), by hand
    f = lambda s: math.cos((s / T + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    return f(t) / f(0)


def test_cosine_schedule_matches_the_formula(diff):
    # the paper's t* = 100 is index 99 (x_{t*} = √ᾱ[t*−1]·x0 + …): ᾱ ≈ 0.9975, noise std ≈ 0.05 on [-1, 1]
    assert diff.alphas_cumprod[99].item() == pytest.approx(0.99751, abs=2e-5)
    assert math.sqrt(1 - diff.alphas_cumprod[99].item()) == pytest.approx(0.0499, abs=2e-4)
    for t in (0, 49, 149, 1999):  # β_t = 1 − ᾱ(t+1)/ᾱ(t) with ᾱ(0) = 1, so ᾱ[t] = f(t+1)/f(0) below the cap
        assert diff.alphas_cumprod[t].item() == pytest.approx(_alpha_bar(t + 1), rel=1e-5)
    assert diff.betas.max().item() == pytest.approx(0.999)  # the cap bites at the very end
    assert diff.posterior_variance[0].item() == 0.0
    assert diff.posterior_log_variance_clipped[0] == diff.posterior_log_variance_clipped[1]


def test_q_sample_statistics(diff):
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((4000, 3, 4, 4), 0.5)
    t = torch.full((4000,), 99)
    xt = diff.q_sample(x0, t, torch.randn(x0.shape, generator=g))
    ab = diff.alphas_cumprod[99].item()
    assert xt.mean().item() == pytest.approx(math.sqrt(ab) * 0.5, abs=1e-3)
    assert xt.std().item() == pytest.approx(math.sqrt(1 - ab), rel=0.01)
    # different t per sample are honoured
    xt2 = diff.q_sample(torch.ones(2, 1, 1, 1), torch.tensor([0, 3999]), torch.zeros(2, 1, 1, 1))
    assert xt2[0].item() == pytest.approx(math.sqrt(diff.alphas_cumprod[0].item()))
    assert xt2[1].item() == pytest.approx(math.sqrt(diff.alphas_cumprod[3999].item()), abs=1e-6)


def test_one_reverse_step_against_hand_computation(diff):
    t_i = 10
    xt = torch.tensor([0.3, -0.2, 0.9]).view(1, 3, 1, 1)
    eps = torch.tensor([0.5, -1.0, 2.0]).view(1, 3, 1, 1)
    v = torch.tensor([0.2, -0.6, 1.0]).view(1, 3, 1, 1)
    z = torch.tensor([1.0, 0.5, -2.0]).view(1, 3, 1, 1)
    seen = {}

    def model(x, tm):
        seen["t"] = tm
        return torch.cat([eps, v], 1)

    got = diff.p_sample(model, xt, torch.tensor([t_i]), z, clip_denoised=True)
    assert seen["t"].item() == pytest.approx(t_i * 1000 / T)  # the rescaled time input
    ab = diff.alphas_cumprod.tolist()
    a, ap = ab[t_i], ab[t_i - 1]
    beta = 1 - a / ap
    beta_tilde = beta * (1 - ap) / (1 - a)
    for c in range(3):
        x0 = math.sqrt(1 / a) * xt.flatten()[c].item() - math.sqrt(1 / a - 1) * eps.flatten()[c].item()
        x0 = max(-1.0, min(1.0, x0))
        mean = beta * math.sqrt(ap) / (1 - a) * x0 + (1 - ap) * math.sqrt(1 - beta) / (1 - a) * xt.flatten()[c].item()
        frac = (v.flatten()[c].item() + 1) / 2
        logvar = frac * math.log(beta) + (1 - frac) * math.log(beta_tilde)
        want = mean + math.exp(0.5 * logvar) * z.flatten()[c].item()
        assert got.flatten()[c].item() == pytest.approx(want, rel=1e-5, abs=1e-6)
    # no noise at the last step
    last = diff.p_sample(model, xt, torch.tensor([0]), z)
    assert torch.allclose(last, diff.p_mean_variance(model, xt, torch.tensor([0]))["mean"])


def test_normal_kl_and_decoder_likelihood_known_values():
    z = torch.zeros(1)
    assert normal_kl(z, z, z + 1, z).item() == pytest.approx(0.5)  # KL(N(0,1) ‖ N(1,1)) = ½
    assert normal_kl(z, z, z, torch.log(torch.tensor([4.0]))).item() == pytest.approx(0.5 * (math.log(4) - 1 + 0.25))
    sigma = 0.01
    ll = discretized_gaussian_log_likelihood(torch.tensor([0.2]), torch.tensor([0.2]), torch.log(torch.tensor([sigma])))
    Phi = lambda u: 0.5 * (1 + math.erf(u / math.sqrt(2)))  # noqa: E731
    assert ll.item() == pytest.approx(math.log(Phi(1 / 255 / sigma) - Phi(-1 / 255 / sigma)), rel=1e-5)
    edge = discretized_gaussian_log_likelihood(torch.tensor([1.0]), torch.tensor([1.0]),
                                               torch.log(torch.tensor([sigma])))
    assert edge.item() == pytest.approx(math.log(1 - Phi(-1 / 255 / sigma)), rel=1e-5)  # the top bin takes the tail


def _oracle(diff, x0, c):
    """A model that knows x0: ε̂ = the true noise of x_t; v chosen by ``c`` (−1: β̃, +1: β)."""

    def model(xt, tm):
        t = torch.round(tm * diff.num_train_timesteps / 1000).long()  # undo the rescaling (no respacing here)
        ab = diff.alphas_cumprod[t].float().view(-1, 1, 1, 1)
        eps = (xt - ab.sqrt() * x0) / (1 - ab).sqrt()
        return torch.cat([eps, torch.full_like(eps, c)], 1)

    return model


def test_hybrid_loss_is_zero_for_a_perfect_model_and_the_decoder_nll_at_t0(diff):
    g = torch.Generator().manual_seed(1)
    x0 = (torch.randint(0, 256, (3, 3, 4, 4), generator=g).float() / 127.5 - 1).clamp(-0.99, 0.99)
    noise = torch.randn(x0.shape, generator=g)
    t = torch.tensor([5, 99, 2000])
    out = diff.training_losses(_oracle(diff, x0, -1.0), x0, t, noise)  # v = −1: log σ² = log β̃ exactly
    assert out["mse"].abs().max().item() < 1e-6
    assert out["vb"].abs().max().item() < 1e-4
    assert out["loss"].abs().max().item() < 1e-3
    # t = 0: the decoder's NLL (bits/dim) of x0 under N(x0, β̃_1) integrated over x0's bin
    out0 = diff.training_losses(_oracle(diff, x0, -1.0), x0, torch.tensor([0, 0, 0]), noise)
    sigma = math.exp(0.5 * diff.posterior_log_variance_clipped[0].item())
    Phi = lambda u: 0.5 * (1 + math.erf(u / math.sqrt(2)))  # noqa: E731
    want_bits = -math.log(Phi(1 / 255 / sigma) - Phi(-1 / 255 / sigma)) / math.log(2)
    assert out0["vb"][0].item() == pytest.approx(want_bits, rel=1e-3)
    # weighting: loss = mse + λ·T·vb
    out2 = diff.training_losses(_oracle(diff, x0, 0.3), x0, t, noise, vlb_weight=0.001)
    assert torch.allclose(out2["loss"], out2["mse"] + 0.001 * T * out2["vb"])
    assert (out2["vb"] > 0).all()


def test_vlb_term_trains_only_the_variance(diff):
    x0 = torch.rand(2, 3, 4, 4) * 2 - 1
    raw = torch.randn(2, 6, 4, 4, requires_grad=True)
    out = diff.training_losses(lambda x, tm: raw * 1.0, x0, torch.tensor([3, 50]), torch.randn(2, 3, 4, 4))
    out["vb"].sum().backward()
    assert raw.grad[:, :3].abs().max().item() == 0.0  # stop-gradient on ε̂ inside L_vlb
    assert raw.grad[:, 3:].abs().max().item() > 0.0


def test_respacing_keeps_alpha_bar_and_recomputes_beta(diff):
    keep = spaced_steps(99, 10)
    assert keep[0] == 0 and keep[-1] == 99 and len(keep) == 10
    r = diff.respace(keep)
    assert torch.allclose(r.alphas_cumprod, diff.alphas_cumprod[keep])
    assert r.betas[3].item() == pytest.approx(
        1 - diff.alphas_cumprod[keep[3]].item() / diff.alphas_cumprod[keep[2]].item())
    assert r.model_time(torch.tensor([9])).item() == pytest.approx(99 * 1000 / T)  # the original timestep is told
    full, order = reverse_process(diff, 100, "ancestral")
    assert order == list(range(99, -1, -1)) and full.num_timesteps == 100


@pytest.mark.parametrize("sampler,steps", [("ancestral", 0), ("respaced", 5), ("ddim", 4)])
def test_samplers_return_x0_with_an_oracle(diff, sampler, steps):
    x0 = torch.rand(3, 3, 8, 8) * 1.6 - 0.8
    g = torch.Generator().manual_seed(0)
    model = _oracle(diff, x0, 0.0)

    def respaced_model(x, tm):  # tm carries the original timestep even after respacing
        return model(x, tm)

    out = purify_batch(respaced_model, diff, x0, 20, sampler, steps, g)
    assert torch.allclose(out, x0, atol=1e-4)


def test_ema_update_and_state():
    m = torch.nn.Linear(2, 1)
    with torch.no_grad():
        m.weight.fill_(1.0)
    ema = EMA(m, 0.9)
    with torch.no_grad():
        m.weight.fill_(3.0)
    ema.update(m)
    assert ema.state_dict()["weight"][0, 0].item() == pytest.approx(0.9 * 1 + 0.1 * 3)
    ema.copy_to(m)
    assert m.weight[0, 0].item() == pytest.approx(1.2)
    with pytest.raises(UnpoisonError):
        EMA(m, 1.0)


def test_unet_presets_and_sizes():
    assert count_params(build_unet("paper", 3, (32, 32))) == pytest.approx(52.5e6, rel=0.01)
    net = build_unet("tiny", 1, (24, 40))  # non-square, one channel, not 32×32
    out = net(torch.randn(2, 1, 24, 40), torch.tensor([1.0, 20.0]))
    assert out.shape == (2, 2, 24, 40)
    with pytest.raises(UnpoisonError, match="divisible"):
        build_unet("cpu", 3, (30, 30))
    with pytest.raises(UnpoisonError, match="unknown UNet preset"):
        build_unet("huge", 3, (32, 32))


def test_model_file_round_trip_and_bad_files(tmp_path):
    torch.manual_seed(0)
    net = build_unet("tiny", 3, (16, 16)).eval()
    p = tmp_path / "m.safetensors"
    save_diffusion(net, p, {"image_size": [16, 16], "diffusion": {"schedule": "cosine", "steps": T}})
    back, info = load_diffusion(p)
    x, tm = torch.randn(1, 3, 16, 16), torch.tensor([5.0])
    with torch.no_grad():
        assert torch.equal(back(x, tm), net(x, tm))
    assert info["image_size"] == [16, 16] and (tmp_path / "m.json").is_file()
    # the same model saved again is the same bytes (safetensors orders several metadata keys at random: a file with
    # two keys would match all five copies with probability 1/16)
    copies = [tmp_path / f"again{i}.safetensors" for i in range(5)]
    for q in copies:
        save_diffusion(net, q, {"image_size": [16, 16], "diffusion": {"schedule": "cosine", "steps": T}})
    assert all(q.read_bytes() == p.read_bytes() for q in copies)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(UnpoisonError, match="not a readable safetensors"):
        load_diffusion(bad)
    with pytest.raises(UnpoisonError, match="not found"):
        load_diffusion(tmp_path / "missing.safetensors")
    with pytest.raises(UnpoisonError, match="is a directory"):
        load_diffusion(tmp_path)
