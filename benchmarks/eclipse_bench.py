"""ECLIPSE at the ``cpu`` profile: poison, fit + purify, train the ``quick`` classifier, record clean test accuracy.

    python benchmarks/eclipse_bench.py --attack lsp                                  # A+B+C (the method) and none
    python benchmarks/eclipse_bench.py --attack lsp --modes A+B+C,A,A+gray,A+noise,none   # Table 4 in small
    python benchmarks/eclipse_bench.py --attack clean --modes A+B+C,none             # the clean-data cost
    python benchmarks/eclipse_bench.py --attack lsp --modes avatar                   # AVATAR-style baseline
    python benchmarks/eclipse_bench.py --attack lsp --set sampler=ancestral --set steps=0 --tag anc   # a variant

The untagged result files hold t* = 100 runs (the default until 2026-12-04; ``--set t_star=100 --set
train_t_max=100`` resumes them); ``t200`` holds t* = 200 without the despeckle filter, ``t200_ds`` the current
defaults (t* = 200, despeckle 0.15). A run refuses to resume over entries or a purified set made with another
setting (t*, sampler, model …).

Modes: ``none`` trains on the poisoned set; ``A`` on the purified set without compensation; ``A+gray`` / ``A+noise``
with only random grayscale (p) / only Gaussian noise (σ); ``A+B+C`` with both (ECLIPSE); ``avatar`` fits the
AVATAR-style purifier (more clean data, no compensation); ``B+C`` trains on the poisoned set with the compensation
only (no diffusion); ``jpeg`` / ``grayscale`` / ``bdr`` are the squeezing baselines, ``despeckle`` the switching
median filter alone. The four A-modes share one diffusion model and one purified set (the compensation is a
training-time transform), so the fit + purify cost is paid once per attack and variant. An A-mode may set the
compensation's strength, e.g. ``A+B+C@noise_std=0.025`` or ``A+gray@gray_p=0.6`` (the paper's Fig. 5 sweeps p over
0.3–0.7 and σ over 0.025–0.15): a training-only variant on the same purified set, recorded under that name.
``--attack clean`` runs on the unpoisoned pool (ECLIPSE applied to clean data: its clean-data cost).

Resumable: the diffusion training state and the purified set live in .cache/eclipse_bench/<run>/ (git-ignored), and
each finished mode is written to benchmarks/results/eclipse_<attack>[_tag].json at once; a rerun skips what is done
(``--fresh`` starts over). Smoke run (seconds, results under a ``smoke`` tag):

    python benchmarks/eclipse_bench.py --attack lsp --per-class 10 --test-per-class 10 --train-epochs 1 \\
        --set unet=tiny --set train_steps=3 --set batch_size=16 --set steps=2 --modes A+B+C,A,none --tag smoke
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (ECLIPSE_SETTING, ECLIPSE_SETTING_BEFORE, add_resume_options, add_run_options,  # noqa: E402
                    COMP_KEYS, parse_comp_overrides, resume_run, save, subsets, train_config)

from unpoison.config import build_config, parse_overrides  # noqa: E402
from unpoison.data import load, load_dataset, profile_split, save_dataset  # noqa: E402
from unpoison.defenses import create_purifier  # noqa: E402
from unpoison.training import train_on  # noqa: E402

SQUEEZE = ("jpeg", "grayscale", "bdr", "despeckle")  # ISS's squeezing baselines and the despeckle filter
COMP = {"A+B+C": None, "A": (0.0, 0.0), "A+gray": (None, 0.0), "A+noise": (0.0, None)}  # (gray_p, noise_std) overrides


def check_same_setting(recorded: dict, current: dict, where: str) -> None:
    """Exit if ``recorded`` (a config saved with earlier results) differs from ``current`` on ECLIPSE_SETTING: a
    resumed run must not mix entries made under other values (e.g. an older default t*)."""
    recorded = ECLIPSE_SETTING_BEFORE | recorded
    keys = [k for k in ECLIPSE_SETTING if k in recorded and k in current and recorded[k] != current[k]]
    if keys:
        diff = ", ".join(f"{k}={recorded[k]} (now {current[k]})" for k in keys)
        again = " ".join(f"--set {k}={recorded[k]}" for k in keys)
        raise SystemExit(f"{where} was made with {diff}: add {again} to extend it, or rerun with --fresh "
                         "or another --tag")


def resolve_mode(mode: str) -> tuple[str, tuple[float | None, float | None] | None]:
    """``"A+B+C@noise_std=0.025"`` → ``("A+B+C", (None, 0.025))``: the base mode and its (gray_p, noise_std) overrides
    (None keeps the configured value; no overrides at all → None). Exits on an unknown mode, or on a strength that is
    not gray_p / noise_std, is not a number, is out of range, or that the base mode turns off."""
    base, *parts = mode.split("@")
    if base not in (*COMP, *SQUEEZE, "none", "avatar", "B+C"):
        raise SystemExit(f"unknown mode {mode!r}")
    if parts and base not in COMP:
        raise SystemExit(f"mode {mode!r}: only the A-modes take @gray_p=… or @noise_std=…")
    comp = dict(zip(COMP_KEYS, COMP.get(base) or (None, None), strict=True))
    for key, value in parse_comp_overrides(f"mode {mode!r}", parts).items():
        if comp[key] == 0.0:
            raise SystemExit(f"mode {mode!r}: {base} has {key} off; sweep it on a mode that uses it")
        comp[key] = value
    return base, (tuple(comp.values()) if parts or COMP.get(base) is not None else None)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--attack", required=True, help="attack name, or 'clean' for the unpoisoned pool")
    ap.add_argument("--modes", default="A+B+C,none",
                    help="comma list of A+B+C | A | A+gray | A+noise | none | avatar | jpeg | grayscale | bdr")
    ap.add_argument("--data", default="cifar10", help="training split; the cpu profile splits it into pools")
    add_run_options(ap, per_class_help="stratified subset of the poison pool (0 = all; smoke)",
                    set_help="ECLIPSE parameter key=value")
    add_resume_options(ap)
    args = ap.parse_args()

    name, ckroot, path, result = resume_run("eclipse_bench", f"eclipse_{args.attack}", args, attack=args.attack,
                                            data=args.data, test=args.test, seed=args.seed)
    overrides = parse_overrides(args.sets)

    def current(method: str) -> dict:  # the resolved config this run asks of ``method``
        from unpoison.defenses import PURIFIERS

        return build_config(PURIFIERS.get(method).config_class, overrides=overrides).to_dict()

    for mode, entry in result["entries"].items():  # earlier entries of this run: same setting, or stop here
        if entry.get("config"):
            check_same_setting(entry["config"], current("avatar" if mode == "avatar" else "eclipse"),
                               f"{path.name} entry {mode!r}")

    pool, clean_pool = profile_split(load(args.data), "cpu")
    pool, test = subsets(pool, load(args.test), args)
    t0 = time.perf_counter()
    if args.attack == "clean":
        pds = pool
    else:
        from unpoison.attacks import create_attack

        pds = create_attack(args.attack, **parse_overrides(args.attack_sets)).poison(pool, seed=args.seed)
    result["poison_seconds"] = round(time.perf_counter() - t0, 1)
    result["sizes"] = {"poisoned": len(pds), "clean_pool": len(clean_pool), "test": len(test)}
    tcfg = train_config(args)
    result["train_config"] = tcfg.to_dict()

    def purified(method: str) -> tuple:  # (dataset, fit/purify record), cached on disk per method
        folder = ckroot / method
        out_path = folder / "purified.npz"
        rec_path = folder / "purify.json"
        if out_path.exists() and rec_path.exists():
            rec = json.loads(rec_path.read_text())
            check_same_setting(rec.get("config", {}), current(method), str(out_path))
            return load_dataset(out_path), rec
        p = create_purifier(method, **overrides, seed=args.seed, checkpoint_dir=str(folder / "ckpt"), progress=True)
        t1 = time.perf_counter()
        p.fit(pds, clean_pool)
        fit_s = time.perf_counter() - t1
        t2 = time.perf_counter()
        out = p.purify(pds)
        rec = {"fit_seconds": round(fit_s, 1), "purify_seconds": round(time.perf_counter() - t2, 1),
               "config": p.config.to_dict(), "model": out.meta["purified"]["model"],
               "loss_history": p.history[-5:]}
        save_dataset(out, out_path)
        rec_path.write_text(json.dumps(rec, indent=2))
        return out, rec

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    resolved = {m: resolve_mode(m) for m in modes}  # every mode checked before the first (long) one runs
    for mode in modes:
        if result["entries"].get(mode, {}).get("done"):
            print(f"{mode}: done already", flush=True)
            continue
        entry: dict = {"mode": mode}
        data = pds
        if mode == "B+C":  # compensation alone, no diffusion (Table 4's row B+C): how much does A add?
            from unpoison.defenses.purify.eclipse import EclipseConfig

            ec = build_config(EclipseConfig, overrides=overrides)
            data = pds.with_images(pds.images, train_transform={
                "name": "eclipse_compensation", "params": {"gray_p": ec.gray_p, "noise_std": ec.noise_std}})
            entry["train_transform"] = data.meta["train_transform"]
        elif mode in SQUEEZE:  # the image-shortcut-squeezing baselines, same recipe (cheap: no cache)
            t1 = time.perf_counter()
            data = create_purifier(mode).fit_purify(pds)
            entry |= {"purify_seconds": round(time.perf_counter() - t1, 1)}
        elif mode != "none":
            data, rec = purified("avatar" if mode == "avatar" else "eclipse")
            entry |= rec
            comp = resolved[mode][1]
            if comp is not None:  # ablation: rewrite the attached compensation (None keeps the configured value)
                spec = data.meta.get("train_transform") or {"name": "eclipse_compensation", "params": {}}
                params = dict(spec["params"])
                for key, val in zip(COMP_KEYS, comp, strict=True):
                    if val is not None:
                        params[key] = val
                    params.setdefault(key, 0.0)
                data = data.with_images(data.images, train_transform={"name": spec["name"], "params": params})
                if params["gray_p"] == 0 and params["noise_std"] == 0:
                    data.meta.pop("train_transform", None)
            entry["train_transform"] = data.meta.get("train_transform")
        t1 = time.perf_counter()
        r = train_on(data, tcfg, test=test, seed=args.seed)
        entry |= {"test_acc": r.test_acc, "train_seconds": round(time.perf_counter() - t1, 1), "precision": r.precision,
                  "done": True}
        result["entries"][mode] = entry
        save(name, result)  # after every mode: a rerun resumes with the next one
        print(mode, {k: v for k, v in entry.items() if k not in ("config", "model", "loss_history")}, flush=True)
    print(path)


if __name__ == "__main__":
    main()
