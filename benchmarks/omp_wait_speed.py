"""OpenMP's wait policy, alone and with a second job on the same cores.

torch's OpenMP threads spin while they wait for work (``OMP_WAIT_POLICY=ACTIVE``-like by default). Alone that saves
wake-up latency; with a second process on the same 2 cores the spinning threads take the cores from the threads that
have work. This times two workloads in fresh processes, each under both policies, alone and as a pair of identical
processes started together (the policy is read when the OpenMP runtime loads, so it cannot change in-process):

- ``unet``: one forward of ECLIPSE's ``cpu`` diffusion UNet on 64 images (purification's unit of work);
- ``train``: one SGD step of the ``quick`` recipe's classifier (fastnet, width 0.5) on 256 images.

    python benchmarks/omp_wait_speed.py                  # run alone: nothing else heavy on the machine

Median seconds per iteration after a warm-up; the pair rows give each process's median.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, save  # noqa: E402

WORKER = r"""
import json, statistics, sys, time
import torch
from unpoison.models.diffusion import build_unet
from unpoison.models.registry import create_model
work, iters = sys.argv[1], int(sys.argv[2])
torch.manual_seed(0)
if work == "unet":
    net = build_unet("cpu", 3, (32, 32)).eval()
    x, t = torch.randn(64, 3, 32, 32), torch.full((64,), 100)
    def step():
        with torch.no_grad():
            net(x, t)
else:
    net = create_model("fastnet", width=0.5).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(256, 3, 32, 32), torch.randint(0, 10, (256,))
    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
step()
ts = []
for _ in range(iters):
    t0 = time.perf_counter(); step(); ts.append(time.perf_counter() - t0)
print(json.dumps({"median": statistics.median(ts), "threads": torch.get_num_threads()}))
"""


def _run(work: str, policy: str, procs: int, iters: int) -> list[float]:
    env = {**os.environ, "OMP_WAIT_POLICY": policy}
    ps = [subprocess.Popen([sys.executable, "-c", WORKER, work, str(iters)], env=env, stdout=subprocess.PIPE,
                           text=True) for _ in range(procs)]
    out = []
    for p in ps:
        stdout, _ = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"worker ({work}, {policy}, {procs} process(es)) failed with status {p.returncode}")
        out.append(json.loads(stdout.strip().splitlines()[-1])["median"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    rows = {}
    t0 = time.perf_counter()
    for work in ("unet", "train"):
        for procs in (1, 2):
            for policy in ("ACTIVE", "PASSIVE"):
                meds = _run(work, policy, procs, args.iters)
                key = f"{work}_{'alone' if procs == 1 else 'pair'}_{policy.lower()}"
                rows[key] = {"median_seconds_per_process": [round(m, 4) for m in meds],
                             "median_seconds": round(statistics.median(meds), 4)}
                print(key, rows[key], flush=True)
    ratios = {f"{w}_{s}_active_over_passive": round(rows[f"{w}_{s}_active"]["median_seconds"]
                                                     / rows[f"{w}_{s}_passive"]["median_seconds"], 2)
              for w in ("unet", "train") for s in ("alone", "pair")}
    print(ratios)
    res = {"iters": args.iters, "rows": rows, "ratios": ratios, "wall_seconds": round(time.perf_counter() - t0, 1),
           "machine": machine(), "command": "python " + " ".join(sys.argv)}
    print(save("omp_wait_speed" + (f"_{args.tag}" if args.tag else ""), res))


if __name__ == "__main__":
    main()
