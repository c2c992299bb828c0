"""Verify that every attack poisons on real CIFAR-10 at the ``cpu`` profile, under the core's ``quick`` recipe.

For each attack named on the command line (default: every registered one):

1. generate the poisoned set from ``cifar10:cpu`` (20,000 images) with the attack's defaults (surrogate-based attacks
   go through the generation cache, so a rerun reuses them);
2. train the ``quick`` recipe (TrainConfig preset "quick") on it and measure clean test accuracy on ``cifar10:test``
   (final and peak over epochs);
3. for backdoors also C-Acc / ASR / R-Acc, with the trigger stamped by ``attack.poison_test(test)``.

A clean reference is trained under the same recipe. Resumable: one JSON per attack in ``benchmarks/results/attacks/``;
an attack whose JSON exists for the same setup is skipped. ``--report`` writes docs/attacks.md from those JSONs.

    UNPOISON_DATA=.data python benchmarks/attacks_verify.py              # everything (hours on 2 CPU cores)
    UNPOISON_DATA=.data python benchmarks/attacks_verify.py em tap lc    # some attacks
    UNPOISON_DATA=.data python benchmarks/attacks_verify.py --report     # docs/attacks.md from the results
    UNPOISON_DATA=.data python benchmarks/attacks_verify.py pixel --set num_pixels=3 --tag 3px   # a variant
    # smoke test only (tiny, results elsewhere):
    python benchmarks/attacks_verify.py em --limit 500 --epochs 1 --set em.max_rounds=1 \\
        --results /tmp/av --doc /tmp/attacks.md
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "attacks"
DOC = REPO / "docs" / "attacks.md"


def parse_sets(items: list[str]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """``key=value`` (every attack with that field) and ``name.key=value`` (one attack)."""
    from unpoison.config import parse_overrides

    common: dict[str, Any] = {}
    per: dict[str, dict[str, Any]] = {}
    for k, v in parse_overrides(items).items():
        if "." in k:
            name, key = k.split(".", 1)
            per.setdefault(name, {})[key] = v
        else:
            common[k] = v
    return common, per


def attack_params(acls: Any, common: dict[str, Any], per: dict[str, Any]) -> dict[str, Any]:
    fields = set(acls.config_class.field_names())
    return {k: v for k, v in common.items() if k in fields} | per.get(acls.name, {})


def load_data(limit: int | None) -> tuple[Any, Any]:
    from unpoison.data import load, stratified_subset

    train = load("cifar10:cpu")
    test = load("cifar10:test")
    if limit:
        per_class = max(2, limit // train.num_classes)
        train = stratified_subset(train, per_class=per_class, seed=0)
        test = stratified_subset(test, per_class=per_class, seed=0)
    return train, test


def train_eval(ds: Any, test: Any, cfg: Any, seed: int) -> tuple[Any, dict[str, Any]]:
    from unpoison.training import Trainer

    r = Trainer(cfg).fit(ds, test=test, seed=seed, eval_every=1)  # per-epoch test accuracy gives the peak
    return r.model, {"test_acc": r.test_acc, "peak_test_acc": r.peak_test_acc, "train_seconds": round(r.seconds, 1),
                     "precision": r.precision,
                     "final_train_acc": r.history[-1].train_acc if r.history else None,
                     "test_acc_per_epoch": [h.test_acc for h in r.history]}


def run_one(name: str, train: Any, test: Any, cfg: Any, params: dict[str, Any], seed: int) -> dict[str, Any]:
    from unpoison.attacks import ATTACKS, BackdoorAttack
    from unpoison.attacks.cache import STATS
    from unpoison.metrics import backdoor_metrics
    from unpoison.training import predict

    attack = ATTACKS.get(name)(**params)
    hits = STATS["hits"]
    t0 = time.perf_counter()
    pds = attack.poison(train, seed=seed)
    gen_s = time.perf_counter() - t0
    out: dict[str, Any] = {
        "attack": name, "kind": attack.kind, "params": attack.config.to_dict(),
        "generation_seconds": round(gen_s, 1), "cache_hit": STATS["hits"] > hits,
        "poison_count": int(pds.is_poison.sum()), "poison_rate": round(pds.poison_rate, 6),
        "relabelled": int((pds.labels != pds.original_labels).sum()),
        "norm": pds.attack.get("norm"), "budget": pds.attack.get("budget"),
    }
    if pds.poison_norms is not None and pds.is_poison.any():
        norms = pds.poison_norms[pds.is_poison]
        out["measured_norm"] = {"max": float(norms.max()), "mean": float(norms.mean())}
    if "generation" in pds.attack:
        out["generation"] = pds.attack["generation"]
    model, res = train_eval(pds, test, cfg, seed)
    out |= res
    if isinstance(attack, BackdoorAttack):
        trig = attack.poison_test(test)
        m = backdoor_metrics(predict(model, test), test.labels, predict(model, trig), trig.original_labels,
                             trig.labels)
        out |= {"clean_acc": m.clean_acc, "asr": m.asr, "robust_acc": m.robust_acc, "n_triggered": m.n_triggered}
    return out


def write_json(path: Path, obj: dict[str, Any]) -> None:
    from unpoison.utils.io import write_json_atomic

    write_json_atomic(path, obj)


def verify(args: argparse.Namespace) -> None:
    from unpoison.attacks import ATTACKS
    from unpoison.config import build_config
    from unpoison.training import TrainConfig

    names = args.names or ATTACKS.names()
    for n in names:
        ATTACKS.get(n)  # unknown names fail before any work
    common, per = parse_sets(args.set or [])
    cfg = build_config(TrainConfig, preset="quick", overrides={"epochs": args.epochs} if args.epochs else None)
    setup = {"profile": "cifar10:cpu", "test": "cifar10:test", "limit": args.limit, "recipe": "quick",
             "train_config": cfg.to_dict(), "seed": args.seed}
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    train, test = load_data(args.limit)
    print(f"train {len(train)} images, test {len(test)} images; recipe quick ({cfg.epochs} epochs)", flush=True)
    command = "python benchmarks/attacks_verify.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    jobs = [("clean", None)] + [(n, ATTACKS.get(n)) for n in names]
    for name, acls in jobs:
        # a tag keeps variants of one attack apart (e.g. the 3- and 5-pixel triggers of ``pixel``)
        path = results / (f"{name}_{args.tag}.json" if args.tag and acls is not None else f"{name}.json")
        params = attack_params(acls, common, per) if acls is not None else {}
        this_setup = setup | {"overrides": params}
        if path.exists() and not args.force:
            old = json.loads(path.read_text())
            if old.get("setup") == this_setup:
                print(f"{name}: done already ({path}), skipped", flush=True)
                continue
            print(f"{name}: {path} is from another setup; redoing it", flush=True)
        print(f"{name}: running", flush=True)
        t0 = time.perf_counter()
        if acls is None:
            _, res = train_eval(train, test, cfg, args.seed)
            res = {"attack": "clean", "kind": "reference"} | res
        else:
            res = run_one(name, train, test, cfg, params, args.seed)
        res |= {"setup": this_setup, "command": command, "seconds": round(time.perf_counter() - t0, 1),
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        write_json(path, res)
        brief = {k: res.get(k) for k in ("test_acc", "peak_test_acc", "asr", "generation_seconds")}
        print(f"{name}: {brief}", flush=True)


def pct(v: Any) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def report(args: argparse.Namespace) -> Path:
    from unpoison.utils.io import write_text_atomic

    results = Path(args.results)
    rows = {p.stem: json.loads(p.read_text()) for p in sorted(results.glob("*.json"))}
    clean = rows.pop("clean", None)
    lines = ["# Attacks verified on real CIFAR-10", "",
             "Generated by `benchmarks/attacks_verify.py --report` from the JSON files in "
             f"`{results.relative_to(REPO) if results.is_relative_to(REPO) else results}`. Each attack poisons the "
             "`cpu` profile's 20,000 training images (`cifar10:cpu`) with its default (CPU) parameters; a classifier "
             "is trained on the result with the core's `quick` recipe and tested on the 10,000 clean test images "
             "(`cifar10:test`). Lower test accuracy = stronger availability attack; for backdoors C-Acc should stay "
             "near the clean reference and ASR should be high (ASR and R-Acc exclude target-class test images). "
             "`precision` is the classifier's (rows without it ran in fp32; `amp=auto` picks bf16 on AMX CPUs, "
             "measured accuracy-neutral in docs/benchmarks.md). Generation seconds are wall time on the machine of "
             "that run (see each JSON's date; the findings below say where a run was paused).", ""]
    if clean:
        lines += [f"Clean reference (same recipe): **{pct(clean.get('test_acc'))}%** test accuracy "
                  f"(peak {pct(clean.get('peak_test_acc'))}%), setup: limit {clean['setup'].get('limit')}, "
                  f"{clean['setup']['train_config']['epochs']} epochs.", ""]
    avail = {k: v for k, v in rows.items() if v.get("kind") == "availability"}
    back = {k: v for k, v in rows.items() if v.get("kind") == "backdoor"}
    if avail:
        lines += ["## Availability poisons", "",
                  "| attack | norm | budget | measured max | poisoned | test acc % | peak % | generation s | cached | "
                  "precision |", "|---|---|---|---|---|---|---|---|---|---|"]
        for k, v in avail.items():
            mn = v.get("measured_norm", {}).get("max")
            lines.append(f"| {k} | {v.get('norm')} | {_num(v.get('budget'))} | {_num(mn)} | {v['poison_count']} | "
                         f"{pct(v.get('test_acc'))} | {pct(v.get('peak_test_acc'))} | {v['generation_seconds']} | "
                         f"{'yes' if v.get('cache_hit') else 'no'} | {v.get('precision', 'fp32')} |")
        lines.append("")
    if back:
        lines += ["## Backdoor poisons", "",
                  "| attack | poisoned | relabelled | C-Acc % | ASR % | R-Acc % | generation s | precision |",
                  "|---|---|---|---|---|---|---|---|"]
        for k, v in back.items():
            lines.append(f"| {k} | {v['poison_count']} | {v['relabelled']} | {pct(v.get('clean_acc'))} | "
                         f"{pct(v.get('asr'))} | {pct(v.get('robust_acc'))} | {v['generation_seconds']} | "
                         f"{v.get('precision', 'fp32')} |")
        lines.append("")
    lines += ["## Exact commands", "", "```"]
    seen: list[str] = []
    for v in ([clean] if clean else []) + list(rows.values()):
        if v.get("command") and v["command"] not in seen:
            seen.append(v["command"])
    lines += [f"UNPOISON_DATA=.data {c}" for c in seen] + ["python benchmarks/attacks_verify.py --report", "```", ""]
    limits = {v["setup"].get("limit") for v in rows.values()} | ({clean["setup"].get("limit")} if clean else set())
    if limits - {None}:
        lines += ["**Warning:** some rows were produced with `--limit` (a subset), not the full cpu profile.", ""]
    lines += ["Parameters of each run are in its JSON file (`params`), together with per-epoch test accuracy.", ""]
    findings = RESULTS / "FINDINGS.md"  # hand-written analysis of the measured rows, kept across regenerations
    if findings.exists():
        lines += [findings.read_text(encoding="utf-8").rstrip(), ""]
    out = Path(args.doc)
    write_text_atomic(out, "\n".join(lines))
    return out


def _num(v: Any) -> str:
    return "–" if v is None else f"{v:.4g}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", help="attack names (default: all registered)")
    ap.add_argument("--report", action="store_true", help="write the markdown report from the results and stop")
    ap.add_argument("--limit", type=int, default=None, help="smoke test: a stratified subset of this many images")
    ap.add_argument("--epochs", type=int, default=None, help="override the quick recipe's epochs (smoke tests)")
    ap.add_argument("--set", action="append", help="attack parameter: key=value (all attacks) or name.key=value")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tag", default=None, help="suffix of the result files (variants of one attack)")
    ap.add_argument("--force", action="store_true", help="redo attacks whose results exist")
    ap.add_argument("--results", default=str(RESULTS), help="folder of per-attack JSON results")
    ap.add_argument("--doc", default=str(DOC), help="markdown report to write with --report")
    args = ap.parse_args()
    if args.report:
        print(f"wrote {report(args)}")
        return
    verify(args)


if __name__ == "__main__":
    main()
