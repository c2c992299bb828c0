"""The despeckle filter in image space, per threshold: what it finds of OPS, what it costs clean images, what it does
to the dense poisons.

    python benchmarks/despeckle_fidelity.py                       # thresholds 0.05 … 0.3 × lsp, ar, ops, em, tap
    python benchmarks/despeckle_fidelity.py --thresholds 0.15 --attacks ops --per-class 100   # smoke

On the 20,000-image ``cpu`` pool (all of it unless ``--per-class``), with the clean originals known:
- clean images: the share of pixels the filter changes and the PSNR of the output against the input;
- OPS: the share of the attack's pixels the filter replaces ("found"), and of those, the share pulled back at least
  halfway to the original value;
- every attack: :func:`unpoison.metrics.purification_fidelity`'s poison left (1 = untouched) and PSNR in → out;
- the filter's time per 1,000 images (median of 3, whole pool; nothing else heavy should run).
Accuracy is measured by ``eclipse_bench.py`` (mode ``despeckle``, and ECLIPSE with ``--set despeckle=τ``).
Writes benchmarks/results/despeckle_fidelity[_tag].json.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, save  # noqa: E402

from unpoison.attacks import create_attack  # noqa: E402
from unpoison.data import load, profile_split, stratified_subset  # noqa: E402
from unpoison.defenses.purify.despeckle import despeckle  # noqa: E402
from unpoison.metrics import psnr, purification_fidelity  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--thresholds", default="0.05,0.1,0.15,0.2,0.3")
    ap.add_argument("--attacks", default="lsp,ar,ops,em,tap")
    ap.add_argument("--data", default="cifar10")
    ap.add_argument("--per-class", type=int, default=0, help="stratified subset of the pool (0 = all 20,000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    pool, _ = profile_split(load(args.data), "cpu")
    if args.per_class:
        pool = stratified_subset(pool, per_class=args.per_class, seed=args.seed)
    thresholds = [float(t) for t in args.thresholds.split(",")]
    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
    poisoned = {a: create_attack(a).poison(pool, seed=args.seed) for a in attacks}  # cached attacks load from disk
    rows = []
    for tau in thresholds:
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            out = despeckle(pool.images, tau)
            times.append(time.perf_counter() - t0)
        row = {"threshold": tau, "s_per_1000": round(statistics.median(times) / len(pool) * 1000, 4),
               "clean_pixels_changed": float((out != pool.images).any(-1).mean()),
               "clean_psnr": round(psnr(out, pool.images), 2), "attacks": {}}
        for a, pds in poisoned.items():
            x = despeckle(pds.images, tau)
            fid = purification_fidelity(x, pool.images, pds.images)
            entry = {"poison_left": round(fid.poison_retained, 4), "psnr_in": round(fid.psnr_poisoned, 2),
                     "psnr_out": round(fid.psnr_purified, 2)}
            if a == "ops":  # one pixel per image: was it found, and how far back did it go
                hit = (pds.images != pool.images).any(-1)
                found = (x != pds.images).any(-1) & hit
                before = np.abs(pds.images.astype(int) - pool.images)[hit].max(-1)
                after = np.abs(x.astype(int) - pool.images)[hit].max(-1)
                entry |= {"pixels_found": round(float(found.sum() / hit.sum()), 4),
                          "pixels_halved": round(float((after <= before / 2).mean()), 4)}
            row["attacks"][a] = entry
        rows.append(row)
        print(row, flush=True)
    name = "despeckle_fidelity" + (f"_{args.tag}" if args.tag else "")
    print(save(name, {"rows": rows, "pool": len(pool), "seed": args.seed, "machine": machine(),
                      "command": "python " + " ".join(sys.argv), "date": datetime.date.today().isoformat()}))


if __name__ == "__main__":
    main()
