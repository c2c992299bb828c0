"""Memory format of ECLIPSE's diffusion UNet: seconds per training step and per no-grad forward, NCHW vs NHWC.

    python benchmarks/unet_format_speed.py                  # the cpu UNet preset, batch 128
    python benchmarks/unet_format_speed.py --repeats 2 --batch 16 --tag smoke
    python benchmarks/unet_format_speed.py --compile --tag compile  # adds the NCHW model under torch.compile

D-VAE trains in NHWC (``channels_last``) because it measured 1.25× faster there (benchmarks/dvae_speed.py). This
checks whether the same holds for the diffusion UNet before changing it: both formats start from the same weights and
their steps are interleaved, so that a slow spell of a shared machine falls on both alike. Reports medians.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
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
    ap.add_argument("--compile", action="store_true", help="also time the NCHW model under torch.compile")
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    torch.manual_seed(0)
    base = build_unet(args.preset, 3, (32, 32))
    x, t = torch.randn(args.batch, 3, 32, 32), torch.rand(args.batch) * 100

    def make(nhwc: bool, train: bool, compiled: bool = False):  # noqa: ANN202
        m, inp = copy.deepcopy(base), x
        if nhwc:
            m, inp = m.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
        fwd = torch.compile(m) if compiled else m

        def step() -> None:
            if train:
                loss = fwd(inp, t).pow(2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            else:
                with torch.no_grad():
                    fwd(inp, t)
        return step

    rows = {}
    for kind, train in (("train_step", True), ("forward", False)):
        steps = {"nchw": make(False, train), "nhwc": make(True, train)}
        first = None
        if args.compile:  # its first call compiles (timed here, not in the medians)
            steps["nchw_compiled"] = make(False, train, compiled=True)
            t0 = time.perf_counter()
            steps["nchw_compiled"]()
            first = time.perf_counter() - t0
        med = interleaved_medians(steps, args.repeats)
        rows[kind] = {"nchw_s": round(med["nchw"], 4), "nhwc_s": round(med["nhwc"], 4),
                      "nhwc_speedup": round(med["nchw"] / med["nhwc"], 3)}
        if first is not None:
            rows[kind] |= {"nchw_compiled_s": round(med["nchw_compiled"], 4),
                           "compile_speedup": round(med["nchw"] / med["nchw_compiled"], 3),
                           "first_compiled_call_s": round(first, 1)}
        print(kind, rows[kind], flush=True)
    res = {"preset": args.preset, "params": count_params(base), "batch": args.batch, "repeats": args.repeats,
           "rows": rows, "machine": machine(), "command": "python " + " ".join(sys.argv)}
    print(save("unet_format_speed" + (f"_{args.tag}" if args.tag else ""), res))


if __name__ == "__main__":
    main()
