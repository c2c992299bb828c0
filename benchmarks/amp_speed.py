"""Does mixed precision help on this machine? Training-step throughput of the quick recipe's model, fp32 vs bf16.

    python benchmarks/amp_speed.py
    python benchmarks/amp_speed.py --arch unet:cpu --batch 128 --steps 6   # ECLIPSE's diffusion UNet

Same model, same batches, alternating fp32 / bf16 steps so both see the same machine state; medians of ``--steps``.
The trainer's ``amp=auto`` turns autocast on only on CUDA; this measurement is why.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from common import machine, save  # noqa: E402

from unpoison.models import create_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="fastnet")
    ap.add_argument("--width", type=float, default=0.5)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--tag", default="", help="suffix of the result file (another machine)")
    args = ap.parse_args()
    torch.manual_seed(0)
    if args.arch.startswith("unet:"):  # ECLIPSE's diffusion UNet (a preset): one hybrid-loss training step
        from unpoison.models.diffusion import GaussianDiffusion, build_unet

        model = build_unet(args.arch.split(":", 1)[1], 3, (32, 32), 0.0)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        diffusion = GaussianDiffusion.cosine(4000)
        x = torch.rand(args.batch, 3, 32, 32) * 2 - 1
        t, noise = torch.randint(0, 100, (args.batch,)), torch.randn(args.batch, 3, 32, 32)

        def loss_of() -> torch.Tensor:
            return diffusion.training_losses(model, x, t, noise, 0.001)["loss"].mean()
    else:
        model = create_model(args.arch, num_classes=10, width=args.width).to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
        x = torch.rand(args.batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (args.batch,))

        def loss_of() -> torch.Tensor:
            return F.cross_entropy(model(x), y)

    def step(dtype: torch.dtype | None) -> float:
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            loss = loss_of()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - t0

    for _ in range(3):
        step(None), step(torch.bfloat16)
    t32, t16 = [], []
    for _ in range(args.steps):
        t32.append(step(None))
        t16.append(step(torch.bfloat16))
    fp32, bf16 = args.batch / statistics.median(t32), args.batch / statistics.median(t16)
    out = {"arch": args.arch, "width": args.width, "batch": args.batch, "fp32_img_per_s": round(fp32, 1),
           "bf16_img_per_s": round(bf16, 1), "bf16_over_fp32": round(bf16 / fp32, 3), "machine": machine(),
           "command": "python " + " ".join(sys.argv)}
    print(save(f"amp_{args.arch.replace(':', '_')}" + (f"_{args.tag}" if args.tag else ""), out))
    print(out)


if __name__ == "__main__":
    main()
