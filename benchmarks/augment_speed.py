"""Batched crop+flip: unpoison's gather-based augmentation against kornia's, on the same batches.

    python benchmarks/augment_speed.py [--batch 256] [--repeats 30] [--tag T]

kornia is the comparison, not a dependency of unpoison: ``pip install kornia`` first.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from common import machine, save  # noqa: E402

from unpoison.training.augment import random_crop, random_flip  # noqa: E402


def bench(fn, repeats: int = 30) -> float:
    for _ in range(3):
        fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=30, help="timed calls per variant (median reported)")
    ap.add_argument("--tag", default="", help="suffix of the result file (augment_speed_<tag>.json)")
    args = ap.parse_args()
    try:
        import kornia.augmentation as K
    except ImportError:
        raise SystemExit("augment_speed needs kornia, the library it compares against: pip install kornia") from None

    x8 = torch.randint(0, 256, (args.batch, 3, 32, 32), dtype=torch.uint8)
    xf = x8.float() / 255
    g = torch.Generator().manual_seed(0)
    ours_u8 = bench(lambda: random_flip(random_crop(x8, 4, g), g).float().div_(255), args.repeats)
    ours_f = bench(lambda: random_flip(random_crop(xf, 4, g), g), args.repeats)
    kaug = torch.nn.Sequential(K.RandomCrop((32, 32), padding=4), K.RandomHorizontalFlip())
    kornia_f = bench(lambda: kaug(xf), args.repeats)
    out = {"batch": args.batch, "ours_uint8_ms": ours_u8 * 1e3, "ours_float_ms": ours_f * 1e3,
           "kornia_ms": kornia_f * 1e3, "speedup_vs_kornia": kornia_f / ours_u8, "machine": machine(),
           "command": " ".join(["python benchmarks/augment_speed.py", *sys.argv[1:]])}
    print(save("augment_speed" + (f"_{args.tag}" if args.tag else ""), out))
    print(out)


if __name__ == "__main__":
    main()
