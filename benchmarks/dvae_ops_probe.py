"""Where D-VAE loses OPS: at each class's shortcut pixel, which branch carries the pixel change δ, and what is left.

    python benchmarks/dvae_ops_probe.py                                   # the defaults' run (κ₂ = 6, mean latent)
    python benchmarks/dvae_ops_probe.py --set kappa2=3 --set latent=sample --tag k2_3
    python benchmarks/dvae_ops_probe.py --set epochs=20 --set stages=1 --tag e20_stage1   # a stage-1 experiment

OPS sets one pixel per class to a fixed colour. D-VAE should model that class-wise change in its perturbation branch
p̂ (class embedding, no KL charge) and subtract it in stage 1. This probe reads the stage models that
``dvae_bench.py --attack ops --mode dvae`` trained with the same overrides (their shared checkpoint folder; without
them it trains both stages, about 20 minutes) and, at the shortcut pixel of every class, measures the share of δ
(projection onto δ, 1 = all of it, 0 = none):
- carried by stage 1's clean estimate x̂ (main decoder, rate-limited) and by its p̂;
- left in stage 1's output x₁ = x − p̂ and in the final output x₂;
and the KL (nats, summed over latent channels) that stage 1's encoder spends at the latent position holding the
pixel, for the poisoned images and for the same images unpoisoned, against its mean over all positions.
Writes benchmarks/results/dvae_ops_probe[_tag].json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_resume_options, add_run_options, resume_run, save  # noqa: E402
from dvae_bench import dvae_stage_dir  # noqa: E402

from unpoison.attacks import create_attack  # noqa: E402
from unpoison.config import parse_overrides  # noqa: E402
from unpoison.data import load, stratified_subset  # noqa: E402
from unpoison.defenses import create_purifier  # noqa: E402
from unpoison.defenses.purify.dvae import kl_map  # noqa: E402


def _share(a: np.ndarray, delta: np.ndarray) -> float:
    """Projection of ``a`` (n, C) onto δ (n, C), pooled over the class: Σ a·δ / Σ δ²."""
    return round(float((a * delta).sum() / (delta * delta).sum()), 4)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="cifar10:cpu")
    ap.add_argument("--probe-per-class", type=int, default=200, help="images per class for the KL and x̂/p̂ probe")
    add_run_options(ap, per_class_help="stratified subset of the pool (0 = all; must match the dvae_bench run)",
                    set_help="D-VAE parameter key=value (as given to dvae_bench.py)")
    add_resume_options(ap)
    args = ap.parse_args()
    args.attack = "ops"
    name, _, _, result = resume_run("dvae_ops_probe", "dvae_ops_probe", args, data=args.data, seed=args.seed)
    overrides = parse_overrides(args.sets)
    pool = load(args.data)
    if args.per_class:
        pool = stratified_subset(pool, per_class=args.per_class, seed=args.seed)
    pds = create_attack("ops", **parse_overrides(args.attack_sets)).poison(pool, seed=args.seed)
    t0 = time.perf_counter()
    p = create_purifier("dvae", **overrides, seed=args.seed, checkpoint_dir=str(dvae_stage_dir(args, overrides)))
    p.fit(pds)
    result["fit_seconds"] = round(time.perf_counter() - t0, 1)
    result["config"] = p.config.fingerprint_dict()
    result["stages"] = {str(k): v for k, v in p.stage_info.items()}  # per-stage losses, KL, PSNR of x̂

    x0 = pds.clean_images.astype(np.float32) / 255
    xp = pds.images.astype(np.float32) / 255
    x1 = p.stage_output(1).astype(np.float32) / 255
    # with --set stages=1 (a stage-1 experiment) there is no x₂
    x2 = p.stage_output(2).astype(np.float32) / 255 if p.config.stages == 2 else None
    y = pds.labels
    f = p.config.downsample
    m1 = p.models[1].eval()
    rows = []
    for k in range(pds.num_classes):
        idx = np.where(y == k)[0]
        if len(idx) == 0:
            continue
        changed = np.abs(xp[idx] - x0[idx]).sum(-1).mean(0)  # (H, W): the class's pixel is the only one changed
        h, w = (int(v) for v in np.unravel_index(changed.argmax(), changed.shape))
        delta = xp[idx, h, w] - x0[idx, h, w]
        # the probe's forward passes on a stratified share of the class (the outputs above cover all of it)
        sub = idx[:args.probe_per_class]
        xb = torch.from_numpy(xp[sub]).permute(0, 3, 1, 2).contiguous()
        xc = torch.from_numpy(x0[sub]).permute(0, 3, 1, 2).contiguous()
        yb = torch.from_numpy(y[sub]).long()
        with torch.no_grad():
            out, out_c = m1(xb, yb, None), m1(xc, yb, None)  # poisoned and the same images clean
        d_sub = delta[:len(sub)]
        xhat = out["xhat"].permute(0, 2, 3, 1).numpy()[:, h, w]
        phat = out["p"].permute(0, 2, 3, 1).numpy()[:, h, w]
        kl_p, kl_c = kl_map(out["mu"], out["logvar"]), kl_map(out_c["mu"], out_c["logvar"])
        rows.append({
            "class": k, "pixel": [h, w], "colour": np.round(xp[idx, h, w].mean(0), 3).tolist(),
            "delta_abs_mean": round(float(np.abs(delta).mean()), 4),
            # x̂ − x_clean carries this share of δ; p̂ this share (x̂ + p̂ ≈ x, so the two add to about 1)
            "xhat_share": _share(xhat - x0[sub, h, w], d_sub), "phat_share": _share(phat, d_sub),
            "left_x1": _share(x1[idx, h, w] - x0[idx, h, w], delta),
            "left_x2": None if x2 is None else _share(x2[idx, h, w] - x0[idx, h, w], delta),
            "kl_at_pixel_poisoned": round(float(kl_p[:, h // f, w // f].mean()), 4),
            "kl_at_pixel_clean": round(float(kl_c[:, h // f, w // f].mean()), 4),
            "kl_mean_poisoned": round(float(kl_p.mean()), 4),
        })
        print(rows[-1], flush=True)
    result["classes"] = rows
    result["mean"] = {key: round(float(np.mean([r[key] for r in rows])), 4) for key in
                      ("xhat_share", "phat_share", "left_x1", "left_x2", "kl_at_pixel_poisoned", "kl_at_pixel_clean",
                       "kl_mean_poisoned") if rows[0][key] is not None}
    print(result["mean"])
    save(name, result)


if __name__ == "__main__":
    main()
