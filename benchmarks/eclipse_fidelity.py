"""What ECLIPSE's CPU shortcuts cost, in image space: how much of each poison the purification leaves, per variant.

    python benchmarks/eclipse_fidelity.py                                   # all variants × lsp, ar, ops, em
    python benchmarks/eclipse_fidelity.py --variants cpu,cpu_ancestral100 --attacks ar --n 200 --tag smoke

A full accuracy row costs a classifier training per variant and, for 100 ancestral steps, 42 minutes of purification
of the 20,000-image pool on 2 cores. This benchmark measures the purification itself instead, on ``--n`` images of
the ``cpu`` pool (stratified), where the clean originals are known (:func:`unpoison.metrics.purification_fidelity`):
``poison_retained`` — the share of the perturbation δ still in the output (1 = untouched, 0 = gone) — and PSNR
against the clean originals, for the poisoned images and for the same images unpoisoned (what purification costs a
clean image). It is a proxy for accuracy, not a substitute: docs/eclipse.md says which accuracy rows exist.

Every variant's diffusion model is fitted on the full pool, so it sees the same sparse clean set as the efficacy runs
(4% of the 20,000-image pool = 800 images from the clean pool, same seed, not 4% of ``--n``); the default variant's
model is the one ``eclipse_bench.py`` trains. Models
are cached in .cache/eclipse_fidelity/<run>/<model>/ (resumable); each finished (variant, attack) entry is written to
benchmarks/results/eclipse_fidelity[_tag].json at once.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_resume_options, resume_run, save  # noqa: E402

from unpoison.attacks import create_attack  # noqa: E402
from unpoison.config import parse_overrides  # noqa: E402
from unpoison.data import load, profile_split  # noqa: E402
from unpoison.data.splits import stratified_indices  # noqa: E402
from unpoison.defenses import create_purifier  # noqa: E402
from unpoison.metrics import psnr, purification_fidelity  # noqa: E402

# variant → (model it needs, that model's training overrides, purification overrides)
MODELS: dict[str, dict] = {
    # the rows of 2026-12-02/03 ran the then-default model (800 steps, t < 100) and t* = 100; pinned so reruns
    # repeat them
    "cpu": {"train_t_max": 100, "train_steps": 800},  # cpu UNet, timesteps < 100
    "cpu_all_t": {"train_t_max": 0, "train_steps": 800},  # trained on all 4000 timesteps, as the paper
    "cpu_3200": {"train_steps": 3200, "train_t_max": 100},  # 4x longer training
    "small": {"unet": "small", "train_t_max": 100, "train_steps": 800},  # the 'small' UNet preset
    "cpu_t400": {"train_t_max": 400, "train_steps": 800},  # trained on timesteps < 400, for a larger t*
    "s1600_t500": {"train_t_max": 500, "train_steps": 1600},  # the default model since 2026-12-07
    # the same steps drawn only from the 5 timesteps the default purification visits (t* = 400, 5 respaced steps)
    "s1600_vis5": {"train_steps": 1600, "train_timesteps": "visited", "t_star": 400, "steps": 5},
}
# (the rows before 2026-12-07 ran the then-default 10 respaced steps; pinned likewise)
VARIANTS: dict[str, tuple[str, dict]] = {
    "cpu": ("cpu", {"t_star": 100, "steps": 10}),  # 10 respaced ancestral steps (the cpu default until 2026-12-07)
    "cpu_ancestral100": ("cpu", {"t_star": 100, "sampler": "ancestral", "steps": 0}),  # the paper's sampler
    "cpu_ddim10": ("cpu", {"t_star": 100, "sampler": "ddim", "steps": 10}),
    "cpu_all_t": ("cpu_all_t", {"t_star": 100, "steps": 10}),
    "cpu_3200": ("cpu_3200", {"t_star": 100, "steps": 10}),
    "small": ("small", {"t_star": 100, "steps": 10}),
    # a larger t* (more noise, sigma ~ 11/255 at 200 and 21/255 at 400 on [0, 1]) for the small denoiser
    # what the wider training range alone costs at the paper's t*
    "t100_m400": ("cpu_t400", {"t_star": 100, "steps": 10}),
    "t200": ("cpu_t400", {"t_star": 200, "steps": 10}),
    "t400": ("cpu_t400", {"t_star": 400, "steps": 10}),
    # the defaults of 2026-12-07 (t* = 400, despeckle, 1,600 steps on t < 500) with 10, 6, 5 and 4 respaced steps
    "s1600_k10": ("s1600_t500", {"t_star": 400, "steps": 10}),
    "s1600_k6": ("s1600_t500", {"t_star": 400, "steps": 6}),
    "s1600_k5": ("s1600_t500", {"t_star": 400, "steps": 5}),
    "s1600_k4": ("s1600_t500", {"t_star": 400, "steps": 4}),
    "s1600_vis_k5": ("s1600_vis5", {"t_star": 400, "steps": 5}),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of {', '.join(VARIANTS)}")
    ap.add_argument("--attacks", default="lsp,ar,ops,em", help="availability attacks (generated on the full pool)")
    ap.add_argument("--n", type=int, default=1000, help="images measured (stratified subset of the pool)")
    ap.add_argument("--set", action="append", default=[], dest="sets", help="ECLIPSE override for every variant")
    add_resume_options(ap)
    args = ap.parse_args()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")

    name, ckroot, path, result = resume_run("eclipse_fidelity", "eclipse_fidelity", args, n=args.n, seed=args.seed)
    pool, clean_pool = profile_split(load("cifar10"), "cpu")
    sub = stratified_indices(pool.labels, total=args.n, seed=args.seed, num_classes=pool.num_classes)
    clean_sub = pool.subset(sub)
    extra = parse_overrides(args.sets)

    models: dict[str, str] = {}

    def model_path(key: str) -> str:  # train (or resume, or find) the variant's diffusion model once
        if key not in models:
            folder = ckroot / key
            target = folder / "model.safetensors"
            if not target.exists():
                p = create_purifier("eclipse", **extra, **MODELS[key], seed=args.seed,
                                    checkpoint_dir=str(folder / "ckpt"), save_model=str(target))
                t0 = time.perf_counter()
                p.fit(pool, clean_pool)
                result.setdefault("models", {})[key] = {"fit_seconds": round(time.perf_counter() - t0, 1),
                                                        "params": p.model_info["params"], **MODELS[key]}
                save(name, result)
            models[key] = str(target)
        return models[key]

    poisoned = {}
    for a in [a.strip() for a in args.attacks.split(",") if a.strip()]:
        pds = create_attack(a).poison(pool, seed=args.seed)  # full pool: the generation cache is shared
        poisoned[a] = pds.subset(sub)

    for v in variants:
        mkey, pover = VARIANTS[v]
        purifier = None
        for a, pds in [("clean", clean_sub), *poisoned.items()]:
            key = f"{v}/{a}"
            if result["entries"].get(key, {}).get("done"):
                continue
            if purifier is None:
                purifier = create_purifier("eclipse", **extra, **pover, model_path=model_path(mkey), seed=args.seed,
                                           progress=False).fit(pool)
            t0 = time.perf_counter()
            out = purifier.purify(pds)
            secs = time.perf_counter() - t0
            entry = {"variant": v, "model": mkey, "attack": a, "purify_overrides": pover,
                     "seconds_per_image": round(secs / len(pds), 5)}
            if a == "clean":  # no perturbation: what purification costs an unpoisoned image
                entry["psnr_purified"] = round(psnr(out.images, clean_sub.images), 3)
            else:
                f = purification_fidelity(out.images, pds.clean_images, pds.images)
                entry |= {k: round(val, 4) if isinstance(val, float) else val for k, val in f.to_dict().items()}
            entry["done"] = True
            result["entries"][key] = entry
            save(name, result)
            print(key, {k: entry[k] for k in entry if k not in ("variant", "attack", "done")}, flush=True)
    print(path)


if __name__ == "__main__":
    main()
