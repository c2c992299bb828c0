"""Per-image purification cost: the recommended CPU configuration of ECLIPSE vs the paper's (52.5M-parameter UNet,
100 ancestral steps from t* = 100), on the same real images, measured side by side on this machine.

    python benchmarks/eclipse_speed.py                          # per-step timing × step count, median of repeats
    python benchmarks/eclipse_speed.py --full                   # also time whole purifications (paper: minutes)
    python benchmarks/eclipse_speed.py --images 4 --repeats 2 --tag smoke

Cost does not depend on the weights, so both UNets are freshly initialised (nothing is trained). For each row the
median time of one reverse step on the batch is measured (``--repeats`` times, after a warm-up), multiplied by the
number of reverse steps the sampler takes, and divided by the batch size; with ``--full`` (always for the CPU rows)
a whole noise-and-denoise pass is timed as well. Two mixed rows split the ratio into its UNet and sampler factors.
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
from unpoison.models.diffusion import GaussianDiffusion, build_unet, count_params, purify_batch, reverse_process  # noqa: E402


def _median_time(fn, repeats: int) -> float:  # noqa: ANN001
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=16, help="batch of real CIFAR-10 test images")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--full", action="store_true", help="also time whole purifications of the paper rows")
    ap.add_argument("--set", action="append", default=[], dest="sets", help="CPU-config override key=value")
    ap.add_argument("--tag", default="")
    args = ap.parse_args()

    cpu = EclipseConfig().with_overrides(args.sets)
    paper = EclipseConfig.from_dict({}, preset="paper")
    rows = {
        "paper": paper,
        "cpu": cpu,
        "paper_unet_cpu_sampler": paper.replace(sampler=cpu.sampler, steps=cpu.steps),
        "cpu_unet_paper_sampler": cpu.replace(sampler=paper.sampler, steps=paper.steps),
    }
    test = load("cifar10:test")
    ds = stratified_subset(test, total=args.images, seed=0) if args.images < len(test) else test
    x = torch.from_numpy(ds.images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    b = len(x)
    nets = {}
    out = {}
    for key, cfg in rows.items():
        torch.manual_seed(0)
        if cfg.unet not in nets:
            nets[cfg.unet] = build_unet(cfg.unet, 3, (32, 32)).eval()
        net = nets[cfg.unet]
        diff = GaussianDiffusion.cosine(cfg.diffusion_steps)
        proc, order = reverse_process(diff, cfg.t_star, cfg.sampler, cfg.steps)
        t_mid = torch.full((b,), order[len(order) // 2], dtype=torch.long)
        z = torch.randn_like(x)
        with torch.no_grad():
            if cfg.sampler == "ddim":
                step_s = _median_time(lambda: proc.ddim_step(net, x, t_mid), args.repeats)
            else:
                step_s = _median_time(lambda: proc.p_sample(net, x, t_mid, z), args.repeats)
        row = {"unet": cfg.unet, "params": count_params(net), "sampler": cfg.sampler, "reverse_steps": len(order),
               "t_star": cfg.t_star, "step_seconds": round(step_s, 5),
               "per_image_seconds": step_s * len(order) / b}
        if args.full or cfg.unet == cpu.unet:
            g = torch.Generator().manual_seed(0)
            full_s = _median_time(lambda: purify_batch(net, diff, x, cfg.t_star, cfg.sampler, cfg.steps, g),
                                  max(1, args.repeats // 2))
            row["per_image_seconds_full"] = full_s / b
        out[key] = row
        print(key, {k: v for k, v in row.items()}, flush=True)
    p_img, c_img = out["paper"]["per_image_seconds"], out["cpu"]["per_image_seconds"]
    res = {"images": b, "repeats": args.repeats, "rows": out, "ratio_paper_over_cpu": round(p_img / c_img, 1),
           "unet_factor": round(out["paper"]["step_seconds"] / out["cpu_unet_paper_sampler"]["step_seconds"], 1),
           "sampler_factor": round(out["paper"]["reverse_steps"] / out["cpu"]["reverse_steps"], 1),
           "est_purify_20k_seconds": {"paper": round(p_img * 20_000), "cpu": round(c_img * 20_000)},
           "cpu_config": cpu.to_dict(), "machine": machine(), "command": "python " + " ".join(sys.argv)}
    print("ratio paper/cpu per image:", res["ratio_paper_over_cpu"],
          "| est. 20k purify s:", res["est_purify_20k_seconds"])
    print(save("eclipse_speed" + (f"_{args.tag}" if args.tag else ""), res))


if __name__ == "__main__":
    main()
