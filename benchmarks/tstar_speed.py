"""Does purification get slower with t*? Whole noise-and-denoise passes of one batch of real images through one
diffusion model at several t* (the same number of reverse steps each), interleaved round by round so that machine
drift hits every t* alike; the median per t*. With ``--flush-denormal`` the same rounds run again with subnormal
floats flushed to zero, which tests whether subnormal arithmetic is what a deeper t* pays for.

    M=.cache/eclipse_bench/eclipse_clean_t300_ds_b/eclipse/ckpt/model.safetensors
    python benchmarks/tstar_speed.py --model $M --flush-denormal          # the trained default model
    python benchmarks/tstar_speed.py --flush-denormal --tag fresh         # a freshly initialised cpu UNet

A freshly initialised UNet is the control: if only the trained model slows down with t*, the cause is in the
weights' arithmetic (e.g. subnormals), not in the sampler's code path.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, save  # noqa: E402

from unpoison.data import load, stratified_subset  # noqa: E402
from unpoison.defenses.purify.eclipse import EclipseConfig  # noqa: E402
from unpoison.models.diffusion import (  # noqa: E402
    GaussianDiffusion,
    build_unet,
    load_diffusion,
    purify_batch,
    reverse_process,
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="", help="a saved diffusion model (.safetensors); default: a fresh cpu UNet")
    ap.add_argument("--t-stars", default="100,200,300,400")
    ap.add_argument("--images", type=int, default=64, help="batch of real CIFAR-10 test images (64 = the default)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--flush-denormal", action="store_true", help="also run every round with denormals flushed")
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    try:
        t_stars = [int(t) for t in args.t_stars.split(",")]
    except ValueError:
        raise SystemExit(f"--t-stars must be a comma list of integers; got {args.t_stars!r}") from None

    cfg = EclipseConfig()
    if args.model:
        net, info = load_diffusion(args.model)
        diff = GaussianDiffusion.cosine(int(info["diffusion"]["steps"]))
    else:
        torch.manual_seed(0)
        net = build_unet(cfg.unet, 3, (32, 32))
        diff = GaussianDiffusion.cosine(cfg.diffusion_steps)
    net.eval()
    test = load("cifar10:test")
    ds = stratified_subset(test, total=args.images, seed=0)
    x = torch.from_numpy(ds.images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    steps = {t: len(reverse_process(diff, t, cfg.sampler, cfg.steps)[1]) for t in t_stars}

    flush_modes = [False, True] if args.flush_denormal else [False]
    times: dict[str, list[float]] = {f"{t}{'_flush' if f else ''}": [] for f in flush_modes for t in t_stars}
    for f in flush_modes:  # one warm-up pass per setting
        torch.set_flush_denormal(f)
        purify_batch(net, diff, x, t_stars[0], cfg.sampler, cfg.steps, torch.Generator().manual_seed(0))
    for r in range(args.rounds):
        for f in flush_modes:
            torch.set_flush_denormal(f)
            for t in t_stars:
                g = torch.Generator().manual_seed(r)
                t0 = time.perf_counter()
                purify_batch(net, diff, x, t, cfg.sampler, cfg.steps, g)
                times[f"{t}{'_flush' if f else ''}"].append(time.perf_counter() - t0)
        print(f"round {r}:", {k: round(v[-1], 3) for k, v in times.items()}, flush=True)
    torch.set_flush_denormal(False)
    rows = {k: {"median_seconds": round(statistics.median(v), 4), "per_image_seconds": statistics.median(v) / len(x),
                "all_seconds": [round(s, 4) for s in v]} for k, v in times.items()}
    base = rows[str(t_stars[0])]["median_seconds"]
    for k, row in rows.items():
        row["ratio_to_first"] = round(row["median_seconds"] / base, 3)
    res = {"model": args.model or f"fresh {cfg.unet} UNet", "images": len(x), "rounds": args.rounds,
           "sampler": cfg.sampler, "reverse_steps": steps, "rows": rows, "machine": machine(),
           "command": "python " + " ".join(sys.argv)}
    for k, row in rows.items():
        print(f"t*={k}: median {row['median_seconds']:.3f} s per {len(x)} images, ×{row['ratio_to_first']:.2f}")
    print(save("tstar_speed" + (f"_{args.tag}" if args.tag else ""), res))


if __name__ == "__main__":
    main()
