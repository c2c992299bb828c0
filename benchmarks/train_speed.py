"""Time-to-accuracy of the trainer's recipes on real CIFAR-10 on this machine.

    python benchmarks/train_speed.py --recipe quick --data cifar10:cpu
    python benchmarks/train_speed.py --recipe standard --data cifar10

Test accuracy is measured after every epoch (evaluation time is not counted as training time; it does not change
the run). Reports images/s and achieved GFLOP/s (forward+backward FLOPs counted by torch's FlopCounterMode)
against the measured fp32 matmul peak. Results go to benchmarks/results/train_<recipe>_<tag>.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from common import machine, matmul_peak_gflops, save  # noqa: E402

from unpoison.config import build_config  # noqa: E402
from unpoison.data import load  # noqa: E402
from unpoison.training import TrainConfig, Trainer  # noqa: E402


def train_flops_per_image(cfg: TrainConfig, num_classes: int, shape: tuple[int, int, int]) -> float:
    from unpoison.models import create_model

    model = create_model(cfg.arch, num_classes=num_classes, in_channels=shape[2], width=cfg.width)
    x = torch.rand(64, shape[2], shape[0], shape[1])
    with FlopCounterMode(display=False) as fc:
        model(x).sum().backward()
    return fc.get_total_flops() / 64


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipe", default="quick")
    ap.add_argument("--data", default="cifar10:cpu")
    ap.add_argument("--test", default="cifar10:test")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], dest="sets")
    ap.add_argument("--tag", default="")
    ap.add_argument("--target", type=float, default=None, help="accuracy target for time-to-accuracy")
    args = ap.parse_args()
    cfg = build_config(TrainConfig, preset=args.recipe, overrides=args.sets)
    train, test = load(args.data), load(args.test)
    peak = matmul_peak_gflops()
    fpi = train_flops_per_image(cfg, train.num_classes, train.image_shape)
    cumulative = [0.0]

    def on_epoch(log):  # noqa: ANN001
        cumulative[0] += log.seconds
        log_line = (f"epoch {log.epoch}: {cumulative[0]:.0f}s train, {log.images_per_s:.0f} img/s, "
                    f"loss {log.loss:.3f}, test {log.test_acc}")
        print(log_line, flush=True)

    t0 = time.perf_counter()
    res = Trainer(cfg, device="auto", on_epoch=on_epoch).fit(train, test=test, seed=args.seed, eval_every=1)
    wall = time.perf_counter() - t0
    train_secs = sum(h.seconds for h in res.history)
    ips = statistics.median(h.images_per_s for h in res.history)
    curve, acc_t = [], 0.0
    for h in res.history:
        acc_t += h.seconds
        curve.append({"epoch": h.epoch, "train_seconds": round(acc_t, 1), "test_acc": h.test_acc})
    target = args.target if args.target is not None else {"quick": 0.75, "standard": 0.85}.get(args.recipe)
    reached = next((c for c in curve if target is not None and c["test_acc"] >= target), None)
    out = {
        "recipe": args.recipe, "data": args.data, "n_train": len(train), "test": args.test, "n_test": len(test),
        "config": cfg.to_dict(), "seed": args.seed, "final_test_acc": res.test_acc,
        "train_seconds": round(train_secs, 1), "wall_seconds_with_eval": round(wall, 1),
        "images_per_s_median": ips, "train_gflop_per_image": fpi / 1e9,
        "achieved_gflops": fpi * ips / 1e9, "matmul_peak_gflops": peak, "fraction_of_peak": fpi * ips / 1e9 / peak,
        "target": target, "time_to_target_s": reached["train_seconds"] if reached else None, "curve": curve,
        "machine": machine(), "command": "python " + " ".join(sys.argv),
    }
    name = f"train_{args.recipe}" + (f"_{args.tag}" if args.tag else "")
    print(save(name, out))
    print({k: out[k] for k in ("final_test_acc", "train_seconds", "images_per_s_median", "achieved_gflops",
                               "matmul_peak_gflops", "time_to_target_s")})


if __name__ == "__main__":
    main()
