"""D-VAE at the ``cpu`` profile: poison, fit + purify, train the ``quick`` classifier, record clean test accuracy.

    python benchmarks/dvae_bench.py --attack lsp --mode dvae           # both stages (the method)
    python benchmarks/dvae_bench.py --attack lsp --mode stage1         # ablation: stage 1 only
    python benchmarks/dvae_bench.py --attack lsp --mode rcvae          # ablation: plain rate-constrained VAE
    python benchmarks/dvae_bench.py --attack lsp --mode none           # no-defense baseline, same recipe
    python benchmarks/dvae_bench.py --attack lsp --mode kappa --kappas 0.5,1,1.5,3   # final KL and PSNR per κ

Resumable: the D-VAE training state lives in .cache/dvae_bench/dvae_stages/<attack>-<hash>/ (per-epoch checkpoints,
git-ignored; shared by the runs whose stage 1 is the same, so stage 1 is trained once per poisoned set), and every
finished entry is written to benchmarks/results/dvae_<attack>_<mode>[_tag].json at once; a rerun skips what is done
(``--fresh`` starts over, but keeps the shared stage checkpoints). Smoke run:
``--per-class 20 --set epochs=1 --train-epochs 1 --tag smoke``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (CACHE, add_resume_options, add_run_options, resume_run, save, subsets,  # noqa: E402
                    train_config)

from unpoison.attacks import create_attack  # noqa: E402
from unpoison.config import parse_overrides  # noqa: E402
from unpoison.data import load  # noqa: E402
from unpoison.defenses import create_purifier  # noqa: E402
from unpoison.defenses.purify.dvae import DVAEPurifier  # noqa: E402
from unpoison.metrics import psnr, purification_fidelity  # noqa: E402
from unpoison.training import train_on  # noqa: E402
from unpoison.utils.seed import derive_seed  # noqa: E402


def dvae_stage_dir(args: argparse.Namespace, overrides: dict) -> Path:
    """Where D-VAE's stage checkpoints for this poisoned set live. They are shared by every run on the same poisoned
    set whose stage 1 is the same (the purifier keys each stage by what it depends on), so a κ₂ sweep, a latent=mean
    run or ``--mode dvae`` after ``--mode stage1`` trains stage 1 once (dvae_ops_probe.py reads them too)."""
    later = DVAEPurifier.unshared_fields()
    shared = {k: v for k, v in overrides.items() if k not in later}  # what stage 1 depends on
    h = derive_seed(args.attack, args.data, args.per_class, args.seed, sorted(args.attack_sets),
                    json.dumps(shared, sort_keys=True, default=str))
    return CACHE / "dvae_bench" / "dvae_stages" / f"{args.attack}-{h:016x}"


def _purify(method: str, pds, overrides: dict, ckpt: Path):  # noqa: ANN001
    t0 = time.perf_counter()
    p = create_purifier(method, **overrides, checkpoint_dir=str(ckpt), progress=True)
    p.fit(pds)
    fit_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    out = p.purify(pds)
    return p, out, round(fit_s, 1), round(time.perf_counter() - t1, 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--attack", required=True)
    ap.add_argument("--mode", choices=["dvae", "stage1", "rcvae", "none", "kappa"], default="dvae")
    ap.add_argument("--data", default="cifar10:cpu")
    add_run_options(ap, per_class_help="stratified subset of the pool (0 = all; smoke runs)",
                    set_help="D-VAE/RCVAE parameter key=value")
    ap.add_argument("--kappas", default="0.5,1,1.5,3", help="κ sweep (mode kappa; rcvae kappa / dvae kappa1)")
    ap.add_argument("--kappa-method", choices=["rcvae", "dvae"], default="rcvae")
    add_resume_options(ap)
    args = ap.parse_args()

    name, ckroot, path, result = resume_run("dvae_bench", f"dvae_{args.attack}_{args.mode}", args, attack=args.attack,
                                            mode=args.mode, data=args.data, test=args.test, seed=args.seed)

    train, test = subsets(load(args.data), load(args.test), args)
    acfg = parse_overrides(args.attack_sets)
    t0 = time.perf_counter()
    # 'clean': D-VAE applied to unpoisoned data (its clean-data cost)
    pds = train if args.attack == "clean" else create_attack(args.attack, **acfg).poison(train, seed=args.seed)
    result["poison_seconds"] = round(time.perf_counter() - t0, 1)
    tcfg = train_config(args)
    result["train_config"] = tcfg.to_dict()
    overrides = parse_overrides(args.sets)

    def fidelity(data) -> dict:  # noqa: ANN001
        """How much of δ the purified set still holds, and its PSNR to the clean originals (to the input on clean)."""
        if args.attack == "clean":
            return {"psnr_purified": round(psnr(data.images, pds.images), 3)}
        f = purification_fidelity(data.images, pds.clean_images, pds.images)
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in f.to_dict().items()}

    def stage_dir(method: str, key: str, extra: dict) -> Path:
        if method != "dvae":  # other methods keep one folder per run
            return ckroot / key
        return dvae_stage_dir(args, {**overrides, **extra})

    def run(key: str, method: str | None, extra: dict, classify: bool = True) -> None:
        if key in result["entries"] and result["entries"][key].get("done"):
            print(f"{key}: done already", flush=True)
            return
        entry: dict = {"method": method, "params": {**overrides, **extra}}
        data = pds
        if method is not None:
            p, data, fit_s, pur_s = _purify(method, pds, {**overrides, **extra}, stage_dir(method, key, extra))
            entry |= {"fit_seconds": fit_s, "purify_seconds": pur_s, "stages": data.meta["purified"]["stages"]}
            # the effective setting, defaults included: a later change of a default cannot misdate this run
            entry["config"] = p.config.fingerprint_dict()
            entry["channels_last"] = p.config.channels_last  # runtime, so not in the fingerprint; it sets the speed
            entry["compile"] = p.config.compile  # likewise
            entry["fidelity"] = fidelity(data)
        if classify:
            t1 = time.perf_counter()
            r = train_on(data, tcfg, test=test, seed=args.seed)
            entry |= {"test_acc": r.test_acc, "train_seconds": round(time.perf_counter() - t1, 1),
                      "precision": r.precision}
        entry["done"] = True
        result["entries"][key] = entry
        save(name, result)  # after every entry: a rerun resumes with the next one
        print(key, {k: v for k, v in entry.items() if k != "stages"}, flush=True)

    if args.mode == "none":
        run("none", None, {})
    elif args.mode == "dvae":
        run("dvae", "dvae", {"stages": 2})
    elif args.mode == "stage1":
        run("stage1", "dvae", {"stages": 1})
    elif args.mode == "rcvae":
        run("rcvae", "rcvae", {})
    else:  # κ sweep: does the KL settle at κ, and does PSNR(x̂) fall as κ tightens?
        key_name = "kappa" if args.kappa_method == "rcvae" else "kappa1"
        extra0 = {} if args.kappa_method == "rcvae" else {"stages": 1}
        for k in [float(v) for v in args.kappas.split(",") if v.strip()]:
            run(f"{args.kappa_method}_k{k:g}", args.kappa_method, {**extra0, key_name: k}, classify=False)
        result["kappa_table"] = [{"kappa": e["params"].get(key_name), "final_kl": e["stages"]["1"]["final"]["kl"],
                                  "psnr_xhat": e["stages"]["1"]["output"]["psnr_xhat"]}
                                 for e in result["entries"].values() if e.get("done")]
        save(name, result)
        print(result["kappa_table"])
    print(path)


if __name__ == "__main__":
    main()
