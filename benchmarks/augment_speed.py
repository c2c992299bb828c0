"""Batched crop+flip: unpoison's gather-based augmentation against kornia's, on the same batches.

    python benchmarks/augment_speed.py
"""

from __future__ import annotations

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
    import kornia.augmentation as K

    x8 = torch.randint(0, 256, (256, 3, 32, 32), dtype=torch.uint8)
    xf = x8.float() / 255
    g = torch.Generator().manual_seed(0)
    ours_u8 = bench(lambda: random_flip(random_crop(x8, 4, g), g).float().div_(255))
    ours_f = bench(lambda: random_flip(random_crop(xf, 4, g), g))
    kaug = torch.nn.Sequential(K.RandomCrop((32, 32), padding=4), K.RandomHorizontalFlip())
    kornia_f = bench(lambda: kaug(xf))
    out = {"batch": 256, "ours_uint8_ms": ours_u8 * 1e3, "ours_float_ms": ours_f * 1e3, "kornia_ms": kornia_f * 1e3,
           "speedup_vs_kornia": kornia_f / ours_u8, "machine": machine(), "command": "python benchmarks/augment_speed.py"}
    print(save("augment_speed", out))
    print(out)


if __name__ == "__main__":
    main()
