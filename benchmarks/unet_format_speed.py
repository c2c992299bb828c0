"""Memory format of ECLIPSE's diffusion UNet: seconds per training step and per no-grad forward, NCHW vs NHWC.

    python benchmarks/unet_format_speed.py                  # the cpu UNet preset, batch 128
    python benchmarks/unet_format_speed.py --repeats 2 --batch 16 --tag smoke

D-VAE trains in NHWC (``channels_last``) because it measured 1.25× faster there (benchmarks/dvae_speed.py). This
checks whether the same holds for the diffusion UNet before changing it: both formats start from the same weights and
their steps are interleaved, so that a slow spell of a shared machine falls on both alike. Reports medians.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved_medians, machine, save  # noqa: E402

from unpoison.models.diffusion import build_unet, count_params  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=6)
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    torch.manual_seed(0)
    base = build_unet(args.preset, 3, (32, 32))
    x, t = torch.randn(args.batch, 3, 32, 32), torch.rand(args.batch) * 100

    def make(nhwc: bool, train: bool):  # noqa: ANN202
        m, inp = copy.deepcopy(base), x
        if nhwc:
            m, inp = m.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(m.parameters(), lr=1e-3)

        def step() -> None:
            if train:
                loss = m(inp, t).pow(2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            else:
                with torch.no_grad():
                    m(inp, t)
        return step

    rows = {}
    for kind, train in (("train_step", True), ("forward", False)):
        med = interleaved_medians({"nchw": make(False, train), "nhwc": make(True, train)}, args.repeats)
        rows[kind] = {"nchw_s": round(med["nchw"], 4), "nhwc_s": round(med["nhwc"], 4),
                      "nhwc_speedup": round(med["nchw"] / med["nhwc"], 3)}
        print(kind, rows[kind], flush=True)
    res = {"preset": args.preset, "params": count_params(base), "batch": args.batch, "repeats": args.repeats,
           "rows": rows, "machine": machine(), "command": "python " + " ".join(sys.argv)}
    print(save("unet_format_speed" + (f"_{args.tag}" if args.tag else ""), res))


if __name__ == "__main__":
    main()
