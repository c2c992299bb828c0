"""How much of a gap between two training sets is the classifier's seed: retrain the ``quick`` recipe on saved
(purified) datasets with several training seeds, everything else fixed.

    B=.cache/eclipse_bench
    python benchmarks/seed_spread.py --tag clean_t200_ds \\
        --sets t200=$B/eclipse_clean_t200/eclipse/purified.npz,t200_ds=$B/eclipse_clean_t200_ds/eclipse/purified.npz \\
        --seeds 1,2

A set may also be a dataset spec: ``--sets clean=cifar10:cpu`` gives the undefended reference at the same seeds, and
``--sets tap=attack:tap`` the undefended poisoned set (the ``cpu`` pool poisoned with the attack's defaults and seed 0,
as eclipse_bench.py's ``none`` mode trains on it).
``PATH@noise_std=0.025`` (or ``@gray_p=…``) retrains a saved ECLIPSE set with its compensation changed, as
eclipse_bench.py's ``A+B+C@noise_std=…`` modes do.
Each set's training-time transform (ECLIPSE's compensation) is honoured as in the benchmarks. Resumable: every
finished (set, seed) is written at once to benchmarks/results/seed_spread_<tag>.json and skipped on a rerun.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine, parse_comp_overrides, save  # noqa: E402

from unpoison.attacks import create_attack  # noqa: E402
from unpoison.config import build_config  # noqa: E402
from unpoison.data import load, profile_split  # noqa: E402
from unpoison.training import TrainConfig, train_on  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sets", required=True, help="NAME=SPEC,… (saved datasets, or specs such as cifar10:cpu)")
    ap.add_argument("--seeds", default="1,2")
    ap.add_argument("--recipe", default="quick")
    ap.add_argument("--test", default="cifar10:test")
    ap.add_argument("--tag", required=True)
    args = ap.parse_args()
    sets = dict(item.split("=", 1) for item in args.sets.split(","))
    seeds = [int(s) for s in args.seeds.split(",")]
    name = f"seed_spread_{args.tag}"
    path = RESULTS / f"{name}.json"
    result = json.loads(path.read_text()) if path.exists() else {"runs": {}}
    result |= {"sets": sets, "recipe": args.recipe, "machine": machine(), "command": "python " + " ".join(sys.argv)}
    test = load(args.test)
    cfg = build_config(TrainConfig, preset=args.recipe)
    pool = None  # the cpu pool, loaded once for every attack:NAME set
    for set_name, set_path in sets.items():
        set_path, *overrides = set_path.split("@")
        if set_path.startswith("attack:"):
            if pool is None:
                pool, _ = profile_split(load("cifar10"), "cpu")
            data = create_attack(set_path.removeprefix("attack:")).poison(pool, seed=0)  # generation is cached
        else:
            data = load(set_path)  # a saved dataset keeps its metadata (ECLIPSE's compensation)
        if overrides:
            spec = data.meta.get("train_transform")
            if not spec or spec.get("name") != "eclipse_compensation":
                raise SystemExit(f"{set_name}: @… overrides need a set that carries ECLIPSE's compensation")
            params = dict(spec["params"]) | parse_comp_overrides(set_name, overrides)
            data.meta["train_transform"] = {**spec, "params": params}
        for seed in seeds:
            key = f"{set_name}/seed{seed}"
            if key in result["runs"]:
                continue
            t0 = time.perf_counter()
            acc = train_on(data, cfg, test=test, seed=seed).test_acc
            result["runs"][key] = {"test_acc": acc, "train_seconds": round(time.perf_counter() - t0, 1)}
            save(name, result)
            print(key, acc, flush=True)
    for set_name in sets:
        accs = [v["test_acc"] for k, v in result["runs"].items() if k.split("/")[0] == set_name]
        if accs:
            print(set_name, f"median {statistics.median(accs):.4f}, range {min(accs):.4f}–{max(accs):.4f}")


if __name__ == "__main__":
    main()
