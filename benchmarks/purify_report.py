"""Tables for docs/eclipse.md and docs/dvae.md from the JSON results of the purification benchmarks.

    python benchmarks/purify_report.py          # rewrites the generated blocks in docs/eclipse.md and docs/dvae.md

Sources (all under benchmarks/results/, each written by the command recorded inside it):
``attacks/<attack>.json`` and ``attacks/clean.json`` (attacks_verify.py: undefended and clean reference),
``eclipse_<attack>.json`` (eclipse_bench.py: modes none, A, A+gray, A+noise, A+B+C, jpeg, grayscale, avatar) and
``dvae_<attack>_<mode>[_k2_K].json`` (dvae_bench.py; the efficacy and cost tables take the run at the current
default κ₂, see ``dvae_default_run``). Every accuracy in a row comes from the same ``quick`` recipe and seed.

A generated block sits between ``<!-- begin:NAME -->`` and ``<!-- end:NAME -->``; the prose around it is kept.
The recovery ratio is (defended − poisoned) / (clean − poisoned); it is left out (—) where the undefended accuracy is
within 10 points of clean, i.e. where the attack did not poison and the ratio would divide by almost nothing.
"""

from __future__ import annotations

import functools
import json
import re
import statistics
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RES = REPO / "benchmarks" / "results"
sys.path.insert(0, str(REPO / "src"))  # the default κ₂ and latent mode come from the package
from unpoison.defenses.purify.dvae import DVAEConfig  # noqa: E402
from unpoison.defenses.purify.eclipse import EclipseConfig  # noqa: E402

sys.path.insert(0, str(REPO / "benchmarks"))
from common import ECLIPSE_SETTING, ECLIPSE_SETTING_BEFORE  # noqa: E402
ATTACKS = ["lsp", "ar", "ops", "urp", "em", "tap", "rem", "sep"]
MIN_GAP = 0.10  # below this clean − poisoned gap the recovery ratio is meaningless


@functools.cache  # the tables read many files several times; one report reads each once (never mutated)
def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _acc(entries: dict, key: str) -> float | None:
    e = entries.get(key, {})
    return e.get("test_acc") if e.get("done") else None


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.2f}"


def _ratio(defended: float | None, poisoned: float | None, clean: float | None) -> float | None:
    if None in (defended, poisoned, clean) or clean - poisoned < MIN_GAP:
        return None
    return (defended - poisoned) / (clean - poisoned)


NO_COMP = (0.0, 0.0)  # (gray_p, noise_std) of a D-VAE run without ECLIPSE's compensation


def _paper_form(accs: list[tuple[float, float, float]]) -> float:
    """The ECLIPSE paper's (and issue #4's) recovery from (defended, undefended, clean) accuracies per attack: one
    ratio of the averaged accuracies, which weighs weakly poisoning attacks less than a mean of ratios does."""
    d, u, c = (statistics.mean(col) for col in zip(*accs, strict=True))
    return (d - u) / (c - u)


def _setting(cfg: dict) -> dict:
    epochs = DVAEConfig(epochs=int(cfg["epochs"]), stage2_epochs=int(cfg.get("stage2_epochs", 0)))
    return {"kappa2": float(cfg["kappa2"]), "latent": cfg["latent"], "epochs": epochs.stage_epochs(1),
            "stage2_epochs": epochs.stage_epochs(2),  # stage 2's effective epochs, as the purifier counts them
            "stage2_scale": float(cfg.get("stage2_scale", 1.0)),  # stage 2 at stage 1's widths before it existed
            "stage2_passes": int(cfg.get("stage2_passes", 1)),  # one pass before the option existed
            "stage2_denoise": float(cfg.get("stage2_denoise", 0.0)),  # off before the option existed
            "despeckle": float(cfg.get("despeckle", 0.0)),  # off in every run before the option existed
            "compensation": (float(cfg.get("gray_p", 0.0)), float(cfg.get("noise_std", 0.0)))}  # likewise


def _dvae_run_files(attack: str) -> list[Path]:
    """The D-VAE (both stages) result files of ``attack``: the untagged run first, then the tagged ones by name."""
    return [RES / f"dvae_{attack}_dvae.json", *sorted(RES.glob(f"dvae_{attack}_dvae_*.json"))]


def dvae_defaults() -> dict:
    """The current defaults that the table's D-VAE column is held to (κ₂, latent mode, each stage's epochs), in the
    shape of :func:`dvae_setting`."""
    return _setting(DVAEConfig().to_dict())


def dvae_setting(entry: dict) -> dict:
    """The setting a D-VAE entry ran with: its recorded config, else its overrides over the defaults of the time
    (runs from before the config was recorded used κ₂ = 3.0, the sampled latent and 10 epochs per stage; runs from
    before stage2_epochs existed trained both stages ``epochs``)."""
    return _setting({"kappa2": 3.0, "latent": "sample", "epochs": 10, **entry.get("params", {}),
                     **entry.get("config", {})})


def dvae_default_run(attack: str, machine: tuple[str | None, str | None] | None = None, **override: Any) -> dict:
    """The D-VAE run of ``attack`` at the current defaults (with ``override`` of :func:`dvae_setting`'s keys): the
    untagged run if it used them, else a tagged run (``--tag k2_K`` …) that did; {} if none was measured. Seed 0
    only, the seed of every other column (reruns at other seeds measure the spread, ``dvae_kappa2_table``).
    ``machine``: only runs made on that machine (:func:`_machine_key`)."""
    want = dvae_defaults() | override
    for f in _dvae_run_files(attack):
        d = _load(f)
        e = d.get("entries", {}).get("dvae", {})
        if (e.get("done") and d.get("seed", 0) == 0 and dvae_setting(e) == want
                and (machine is None or _machine_key(d) == machine)):
            return d
    return {}


# the defaults until 2026-12-04 differed from today's in t*, train_t_max, train_steps and the reverse steps only;
# runs that predate a recorded key used them (the compensation, training steps and reverse steps pinned to what
# every run of then recorded, so a later default cannot relabel them)
ECLIPSE_OLD = {**EclipseConfig().to_dict(), "t_star": 100, "train_t_max": 100, "train_steps": 800, "gray_p": 0.4,
               "noise_std": 0.05, "steps": 10, **ECLIPSE_SETTING_BEFORE}


def eclipse_setting(cfg: dict) -> dict:
    """The ECLIPSE setting (what decides the purified set) of a recorded config."""
    return {k: cfg.get(k, ECLIPSE_OLD[k]) for k in ECLIPSE_SETTING}


# the tag whose runs fill the efficacy table's ECLIPSE column (one machine for every attack): runs at the same
# setting on other machines (the `amd` refits of 2026-12-07) must not replace some of its cells
EFFICACY_TAG = "t400_m500_s1600_k5"


def eclipse_default_run(attack: str) -> dict:
    """The ECLIPSE run of ``attack`` whose A+B+C entry used the current defaults: the untagged run if it did, else
    the ``EFFICACY_TAG`` run, else another tagged one (``--tag t200`` …); {} if none was measured."""
    want = eclipse_setting(EclipseConfig().to_dict())
    for f in [RES / f"eclipse_{attack}.json", RES / f"eclipse_{attack}_{EFFICACY_TAG}.json",
              *sorted(RES.glob(f"eclipse_{attack}_*.json"))]:
        d = _load(f)
        for mode, e in d.get("entries", {}).items():
            if mode.split("@")[0] != "A+B+C" or not e.get("done"):
                continue
            cfg = dict(e.get("config") or {})  # the purifier's config; the compensation is what it trained with
            cfg |= (e.get("train_transform") or {}).get("params") or {}  # (a swept A+B+C@noise_std=… differs)
            # a run given a saved model (model_path) purified with that model's training, not its config's defaults
            model = e.get("model") or {}
            cfg |= {k: v for k, v in (model.get("training") or {}).items() if k in ECLIPSE_SETTING}
            cfg |= {k: model[m] for k, m in (("train_steps", "steps_trained"), ("train_t_max", "train_t_max"))
                    if m in model}
            if eclipse_setting(cfg) == want:
                return d | {"file": f.stem, "entries": {**d["entries"], "A+B+C": e}}
    return {}


@functools.cache  # every table reads the same files; read them once
def collect() -> tuple[float | None, dict[str, dict[str, float | None]]]:
    clean = _load(RES / "attacks" / "clean.json").get("test_acc")  # fp32 (session of 2026-11-24)
    # the clean reference in bf16, for rows whose classifiers trained in bf16 (AMX machines, amp=auto)
    clean_bf16 = _acc(_load(RES / "eclipse_clean_bf16ref.json").get("entries", {}), "none")
    rows: dict[str, dict[str, float | None]] = {}
    for a in ATTACKS + ["clean"]:
        ecl = _load(RES / f"eclipse_{a}.json").get("entries", {})  # the t* = 100 runs: baselines and ablations
        ecl_def = eclipse_default_run(a).get("entries", {})
        dv = dvae_default_run(a).get("entries", {})
        av = _load(RES / "attacks" / f"{a}.json")
        row = {
            # undefended: the eclipse run's own 'none' entry, else the attack verification (same recipe and seed)
            "none": _acc(ecl, "none") if _acc(ecl, "none") is not None else av.get("test_acc"),
            "jpeg": _acc(ecl, "jpeg"), "grayscale": _acc(ecl, "grayscale"),
            # the despeckle filter alone: measured beside ECLIPSE + despeckle (``--tag t200_ds``)
            "despeckle": _acc(ecl, "despeckle") if _acc(ecl, "despeckle") is not None
            else _acc(_load(RES / f"eclipse_{a}_t200_ds.json").get("entries", {}), "despeckle"),
            "eclipse": _acc(ecl_def, "A+B+C"), "eclipse_t100": _acc(ecl, "A+B+C"),
            "A": _acc(ecl, "A"), "A+gray": _acc(ecl, "A+gray"),
            "A+noise": _acc(ecl, "A+noise"), "B+C": _acc(ecl, "B+C"),
            # the AVATAR-style baseline: the untagged run's entry, else its own run (``--modes avatar --tag avatar``)
            "avatar": _acc(ecl, "avatar") if _acc(ecl, "avatar") is not None
            else _acc(_load(RES / f"eclipse_{a}_avatar.json").get("entries", {}), "avatar"),
            "dvae": _acc(dv, "dvae"),
            # the default run without compensation: what the stage-1-only and RCVAE runs compare with (none has it)
            "dvae_plain": _acc(dvae_default_run(a, compensation=NO_COMP).get("entries", {}), "dvae"),
            "stage1": _acc(_load(RES / f"dvae_{a}_stage1.json").get("entries", {}), "stage1"),
            "rcvae": _acc(_load(RES / f"dvae_{a}_rcvae.json").get("entries", {}), "rcvae"),
        }
        if a == "clean":
            row["none"] = clean
        # entries written before precision was recorded ran in fp32 (amp=auto was CUDA-only then)
        row["precision"] = "/".join(sorted({e.get("precision", "fp32") for e in [*ecl.values(), *dv.values(),
                                                                                  *ecl_def.values()]
                                            if e.get("done")} or {"fp32"}))
        row["clean_ref"] = clean_bf16 if row["precision"] == "bf16" and clean_bf16 is not None else clean
        rows[a] = row
    return clean, rows


def _machine_key(run: dict) -> tuple[str | None, str | None]:
    """(platform string, CPU model) of the machine a result file recorded."""
    m = run.get("machine") or {}
    return m.get("platform"), m.get("cpu_model")


def same_machine_clean_ref(run: dict) -> float | None:
    """The undefended clean accuracy (a ``none`` entry of a clean-data run) measured on the kind of machine ``run``
    ran on (same recorded platform string and CPU model) with the same classifier recipe and seed, or None. Machines
    differ by about a point on the same seed (80.57 on 2026-11-24 and 81.42 since on AMD EPYC VMs, 80.76 on an Intel
    Xeon VM whose platform string is the same as the 81.42 one's), so a cost is fairest against its own machine; a
    longer recipe (``--tag t200_e18``: 86.44) is no reference for it. Several matching references are averaged (on
    one machine the recipe is deterministic, so they agree)."""
    key = _machine_key(run)
    if not key[0]:
        return None
    refs = []
    for f in sorted(RES.glob("*_clean_*.json")):
        d = _load(f)
        acc = _acc(d.get("entries", {}), "none")
        if (acc is not None and _machine_key(d) == key
                and d.get("seed") == run.get("seed") and d.get("train_config") == run.get("train_config")):
            refs.append(acc)
    return statistics.mean(refs) if refs else None


def efficacy_table(method: str, label: str) -> str:
    clean, rows = collect()
    head = ("| attack | no defense | JPEG-10 | grayscale | despeckle | ECLIPSE | D-VAE | clean reference | "
            f"recovery of {label} | classifier precision |\n|---|---|---|---|---|---|---|---|---|---|\n")
    lines, ratios, accs = [], [], []
    for a in ATTACKS:
        r = rows[a]
        if all(r[k] is None for k in ("none", "eclipse", "dvae", "jpeg", "grayscale")):
            continue
        rr = _ratio(r[method], r["none"], r["clean_ref"])
        if rr is not None:
            ratios.append(rr)
            accs.append((r[method], r["none"], r["clean_ref"]))
        lines.append(f"| {a.upper()} | {_pct(r['none'])} | {_pct(r['jpeg'])} | {_pct(r['grayscale'])} | "
                     f"{_pct(r['despeckle'])} | {_pct(r['eclipse'])} | {_pct(r['dvae'])} | {_pct(r['clean_ref'])} | "
                     f"{'—' if rr is None else f'{rr:.3f}'} | {r['precision']} |")
    c = rows["clean"]
    lines.append(f"| none (clean data) | {_pct(clean)} | {_pct(c['jpeg'])} | {_pct(c['grayscale'])} | "
                 f"{_pct(c['despeckle'])} | {_pct(c['eclipse'])} | {_pct(c['dvae'])} | {_pct(clean)} | — | "
                 f"{c['precision']} |")
    avg = f"{statistics.mean(ratios):.3f} over {len(ratios)} attack(s)" if ratios else "not measured yet"
    if accs:
        avg += f" (as the ECLIPSE paper computes it, from the averaged accuracies: {_paper_form(accs):.3f})"
    cost = c[method]
    cost_s = "not measured yet" if cost is None or clean is None else f"{100 * (clean - cost):.2f} points"
    run = eclipse_default_run("clean") if method == "eclipse" else dvae_default_run("clean")
    own = same_machine_clean_ref(run)
    if cost is not None and clean is not None and own is not None and own != clean:
        cost_s = (f"{100 * (own - cost):.2f} points against the clean reference measured on the same machine "
                  f"({_pct(own)}); {100 * (clean - cost):.2f} against the table's {_pct(clean)}")
    want = dvae_defaults()
    return (head + "\n".join(lines) + f"\n\nAverage recovery of {label}: **{avg}**. "
            f"Clean-data cost ({label} applied to unpoisoned data): **{cost_s}**. The D-VAE column holds the runs at "
            f"the current defaults (κ₂ = {want['kappa2']:g}, latent = {want['latent']}, {want['epochs']}/"
            f"{want['stage2_epochs']} epochs for stages 1/2, {_comp_words(*want['compensation'])}); runs at "
            "other settings are in docs/dvae.md, sections \"Stage-1 epochs\", \"Stage 2's rate κ₂\" and "
            "\"Compensation\".\n")


def _comp_cell(comp: tuple[float, float]) -> str:
    """A compensation (gray_p, noise_std) as a table cell: "p/σ", or — for none."""
    return f"{comp[0]:g}/{comp[1]:g}" if comp != NO_COMP else "—"


def _comp_words(gray_p: float, noise_std: float) -> str:
    return (f"compensation grayscale p = {gray_p:g}, noise σ = {noise_std:g}" if gray_p or noise_std
            else "no compensation")


def ablation_table() -> str:
    clean, rows = collect()
    head = ("| attack | none | A (diffusion only) | A + gray (B) | A + noise (C) | B+C (no diffusion) "
            "| A+B+C (ECLIPSE, t* = 100) | AVATAR-style (A on 20,000 clean images) |\n"
            "|---|---|---|---|---|---|---|---|\n")
    lines = [f"| {a.upper()} | {_pct(r['none'])} | {_pct(r['A'])} | {_pct(r['A+gray'])} | {_pct(r['A+noise'])} | "
             f"{_pct(r['B+C'])} | {_pct(r['eclipse_t100'])} | {_pct(r['avatar'])} |" for a, r in rows.items()
             if a != "clean" and any(r[k] is not None for k in ("A", "A+gray", "A+noise", "B+C", "avatar"))]
    return head + "\n".join(lines) + "\n"


def dvae_ablation_table() -> str:
    clean, rows = collect()
    head = ("| attack | none | stage 1 only | D-VAE (both stages, no compensation) | rate-constrained VAE |\n"
            "|---|---|---|---|---|\n")
    lines = [f"| {a.upper()} | {_pct(r['none'])} | {_pct(r['stage1'])} | {_pct(r['dvae_plain'])} | {_pct(r['rcvae'])} |"
             for a, r in rows.items() if a != "clean" and any(r[k] is not None for k in ("stage1", "rcvae"))]
    return head + "\n".join(lines) + "\n"


def cost_table() -> str:
    """ECLIPSE's fit + purify seconds on the 20,000-image poisoned set, per attack run."""
    lines = []
    for a in ATTACKS + ["clean"]:
        e = _load(RES / f"eclipse_{a}.json").get("entries", {}).get("A+B+C")
        if e and e.get("fit_seconds") is not None:
            reused = (e.get("config") or {}).get("model_path")
            if reused:  # the diffusion model depends on the clean sparse set only, so one serves every attack
                run = Path(reused).parts[-4] if len(Path(reused).parts) >= 4 else reused
                lines.append(f"| {a} | model of {run} reused | {e['purify_seconds']:.0f} | — |")
                continue
            tot = e["fit_seconds"] + e["purify_seconds"]
            lines.append(f"| {a} | {e['fit_seconds']:.0f} | {e['purify_seconds']:.0f} | {tot / 60:.1f} |")
    head = "| run | fit (s) | purify (s) | fit + purify (min) |\n|---|---|---|---|\n"
    return head + "\n".join(lines) + "\n"


def dvae_cost_table() -> str:
    """Per D-VAE run at the defaults: each stage's training time as its checkpoint recorded it (a stage resumed from
    the shared checkpoints keeps the time of the run that trained it) and this run's fit wall time."""
    lines = []
    for a in ATTACKS + ["clean"]:
        d = dvae_default_run(a)
        e = d.get("entries", {}).get("dvae")
        if not e or e.get("fit_seconds") is None:
            continue
        st = e.get("stages", {})
        resumed = [k for k, v in st.items() if v.get("resumed_from_epoch", 0) >= v.get("epochs", 1)]
        cells = [f"{st[k]['train_seconds']:.0f}" if k in st else "—" for k in ("1", "2")]
        lines.append(f"| {a} | {d.get('date') or '—'} | {cells[0]} | {cells[1]} | {e['fit_seconds']:.0f} | "
                     f"{', '.join(resumed) or 'none'} |")
    head = ("| run | measured | stage 1 training (s) | stage 2 training (s) | this run's fit, wall (s) | "
            "stages loaded from checkpoint |\n|---|---|---|---|---|---|\n")
    return head + "\n".join(lines) + "\n"


def _cpu(run: dict) -> str:
    """The recorded CPU model, short ("AMD EPYC", "Intel Xeon"); — where the run predates the record."""
    model = (run.get("machine") or {}).get("cpu_model") or "—"
    return model.replace("(R)", "").replace(" Processor", "")


def _runs_at_defaults_except(attack: str, free: tuple[str, ...]) -> Iterator[tuple[Path, dict, dict, dict]]:
    """The finished D-VAE runs of ``attack`` whose setting (:func:`dvae_setting`) is the current defaults' in every
    key but ``free``: (file, result, its dvae entry, its setting)."""
    want = {k: v for k, v in dvae_defaults().items() if k not in free}
    for f in _dvae_run_files(attack):
        d = _load(f)
        e = d.get("entries", {}).get("dvae", {})
        setting = dvae_setting(e) if e.get("done") else {}
        if setting and {k: v for k, v in setting.items() if k not in free} == want:
            yield f, d, e, setting


def _default_stage_runs(attack: str) -> Iterator[tuple[Path, dict, dict, tuple[float, float]]]:
    """The finished D-VAE runs of ``attack`` whose stages are at the current defaults, whatever compensation their
    classifier trained with: (file, result, its dvae entry, its compensation)."""
    for f, d, e, setting in _runs_at_defaults_except(attack, ("compensation",)):
        yield f, d, e, setting["compensation"]


STAGE_SET_COMPS = [NO_COMP, (0.4, 0.0), (0.0, 0.025), (0.4, 0.025), (0.6, 0.025), (0.4, 0.05)]


def _comp_name(comp: tuple[float, float]) -> str:
    return "no compensation" if comp == NO_COMP else f"p = {comp[0]:g}, σ = {comp[1]:g}"


def dvae_stage_sets_table() -> str:
    """Every set of D-VAE runs at the default stages that share one set of stages (the same attack, seed, machine
    and day, and identical stage outputs), by compensation: the differences within a row are the compensation's alone.
    Clean-data cells add the cost against the same seed on the same kind of machine."""
    groups: dict[tuple, dict] = {}
    for a in ATTACKS + ["clean"]:
        for f, d, e, comp in _default_stage_runs(a):
            out2 = e["stages"]["2"]["output"]  # the purified images' statistics: equal for the same stages
            key = (a, d.get("seed", 0), _cpu(d), _measured_on(f), out2["psnr_xhat"], out2["kl"])
            groups.setdefault(key, {})[comp] = (d, e["test_acc"])
    lines = []
    costs: dict[tuple[float, float], list[float]] = {}
    for key in sorted(groups, key=lambda k: ((ATTACKS + ["clean"]).index(k[0]), k[1:4])):
        runs = groups[key]
        if len(runs) < 2:
            continue
        cells = []
        for comp in STAGE_SET_COMPS:
            if comp not in runs:
                cells.append("—")
                continue
            d, acc = runs[comp]
            ref = same_machine_clean_ref(d) if key[0] == "clean" else None
            if ref is not None:
                costs.setdefault(comp, []).append(100 * (ref - acc))
            cells.append(_pct(acc) + (f" (cost {100 * (ref - acc):.2f})" if ref is not None else ""))
        label = "none (clean data)" if key[0] == "clean" else key[0].upper()
        lines.append(f"| {label} | {key[1]} | {key[2]} | {key[3]} | " + " | ".join(cells) + " |")
    head = ("| data | seed | CPU | measured | " + " | ".join(_comp_name(c) for c in STAGE_SET_COMPS)
            + " |\n" + "|---" * (4 + len(STAGE_SET_COMPS)) + "|\n")
    mean = "; ".join(f"{_comp_name(c)} **{statistics.mean(v):.2f}** ({len(v)} row{'s' if len(v) > 1 else ''})"
                     for c in STAGE_SET_COMPS if (v := costs.get(c)))
    return head + "\n".join(lines) + "\n\nMean clean-data cost over the clean-data rows: " + mean + ".\n"


def _stage2_table(free: tuple[str, ...], heads: tuple[str, ...], vm_refs: bool = False) -> str:
    """Stage-2 variants on the same stage 1 as a default run: per data, seed and machine (one stage 1: equal stage-1
    output statistics), every run whose setting differs from the defaults at most in ``free`` (one column each,
    headed ``heads``), the compensation at its default; groups with no variant are left out. Attacks get their
    recovery against the efficacy table's references, clean data its cost against the same machine's clean reference;
    with ``vm_refs`` also the recovery against the undefended and clean runs of the AMD VM's ``LR_NONE_TAG``
    references, for runs made on that machine."""
    _, rows = collect()
    refs, clean_vm, vm_key = _vm_references([x for x in ATTACKS if x != "urp"], LR_NONE_TAG) if vm_refs else ({}, None,
                                                                                                            None)
    defaults = dvae_defaults()
    default_values = tuple(defaults[k] for k in free)
    on_vm: dict[tuple, dict[str, float]] = {}  # values of ``free`` → attack → recovery against this VM's references
    groups: dict[tuple, list] = {}
    for a in ATTACKS + ["clean"]:
        for f, d, e, setting in _runs_at_defaults_except(a, free):
            out1 = e["stages"]["1"]["output"]
            key = (a, d.get("seed", 0), _cpu(d), out1["psnr_xhat"], out1["kl"])
            groups.setdefault(key, []).append((tuple(setting[k] for k in free), f, d, e))
    lines = []
    for key in sorted(groups, key=lambda k: ((ATTACKS + ["clean"]).index(k[0]), k[1:3])):
        runs = groups[key]
        if all(r[0] == default_values for r in runs):
            continue  # no variant on this stage 1
        a = key[0]
        for values, f, d, e in sorted(runs, key=lambda r: r[0]):
            acc = e["test_acc"]
            if a == "clean":
                ref = same_machine_clean_ref(d)
                score = "—" if ref is None else f"cost {100 * (ref - acc):.2f}"
            else:
                rr = _ratio(acc, rows[a]["none"], rows[a]["clean_ref"])
                score = "—" if rr is None else f"recovery {rr:.3f}"
                if vm_refs and refs.get(a) is not None and clean_vm is not None and _machine_key(d) == vm_key:
                    r_vm = _ratio(acc, refs[a], clean_vm)
                    score += f" ({r_vm:.3f} against this VM's)"
                    if key[1] == 0:
                        on_vm.setdefault(values, {})[a] = r_vm
            st2 = e["stages"]["2"]
            label = "none (clean data)" if a == "clean" else a.upper()
            cells = " | ".join(f"{v:g}" for v in values)
            lines.append(f"| {label} | {key[1]} | {key[2]} | {cells} | {_pct(acc)} | {score} | "
                         f"{'—' if a == 'clean' else format(e['fidelity']['poison_retained'], '.3f')} | "
                         f"{e['fidelity']['psnr_purified']:.2f} | {st2['output']['psnr_xhat']:.2f} | "
                         f"{st2['train_seconds']:.0f} | {f.stem} |")
    if not lines:
        return "Not measured yet.\n"
    head = ("| data | seed | CPU | " + " | ".join(heads) + " | accuracy | recovery / cost | δ left | "
            "PSNR purified (dB) | stage-2 x̂ PSNR (dB) | stage-2 training (s) | run |\n"
            + "|---" * (10 + len(heads)) + "|\n")
    base = on_vm.get(default_values, {})
    paired = []
    for values, recs in sorted(on_vm.items()):
        both = [a for a in recs if a in base]
        if values != default_values and both:
            setting = ", ".join(f"{h} {v:g}" for h, v in zip(heads, values, strict=True))
            paired.append(f"{setting}: **{statistics.mean(recs[a] for a in both):.3f}** against "
                          f"{statistics.mean(base[a] for a in both):.3f} at the defaults over {len(both)} attack"
                          f"{'s' * (len(both) > 1)} ({', '.join(a.upper() for a in both)})")
    note = ("\nMean recovery against this VM's references, each variant paired with the default run on the same "
            "stage 1 (seed 0, runs made on the references' VM): " + "; ".join(paired) + ".\n") if paired else ""
    return head + "\n".join(lines) + "\n" + note


def dvae_stage2_width_table() -> str:
    """Stage 2 at other widths (``stage2_scale``) or rates (κ₂) on the same stage 1 as a default run."""
    return _stage2_table(("stage2_scale", "kappa2"), ("stage-2 scale", "κ₂"))


def dvae_stage2_variants_table() -> str:
    """Stage 2's operator applied more than once at purification (``stage2_passes``) or stage 2 trained as a
    denoising VAE (``stage2_denoise``), on the same stage 1 as a default run."""
    return _stage2_table(("stage2_passes", "stage2_denoise"), ("stage-2 passes", "denoise σ"), vm_refs=True)


def dvae_fit_time_table() -> str:
    """Every D-VAE fit that trained both stages from scratch at the CPU widths and the 20/10 epochs, by machine and
    memory format (NHWC since 2026-12-06, the entry's ``channels_last``; runs before recorded none and ran NCHW), and
    whether the training step ran under torch.compile (``compile``)."""
    arch = {k: v for k, v in DVAEConfig().to_dict().items()
            if k in ("width", "feat_channels", "latent_channels", "dec_widths", "epochs", "stage2_epochs")}
    rows = []
    for f in sorted(RES.glob("dvae_*_dvae*.json")):
        d = _load(f)
        e = d.get("entries", {}).get("dvae", {})
        cfg, st = e.get("config", {}), e.get("stages", {})
        if not e.get("done") or e.get("fit_seconds") is None or set(st) != {"1", "2"}:
            continue
        if any(cfg.get(k) != v for k, v in arch.items()) or cfg.get("stage2_scale", 1.0) != 1.0 \
                or any(v.get("resumed_from_epoch", 0) for v in st.values()):
            continue
        compiled = e.get("compile", e.get("params", {}).get("compile"))  # recorded, else the run's own --set
        fmt = ("NHWC" if e.get("channels_last") else "NCHW") + (", compiled" if compiled else "")
        rows.append(((_cpu(d), fmt, f.stem), f"| {f.stem} | {_measured_on(f)} | {_cpu(d)} | {fmt} | "
                     f"{st['1']['train_seconds']:.0f} | {st['2']['train_seconds']:.0f} | {e['fit_seconds']:.0f} |"))
    head = ("| run | measured | CPU | memory format, compile | stage 1 training (s) | stage 2 training (s) "
            "| fit, wall (s) |\n" + "|---" * 7 + "|\n")
    return head + "\n".join(r for _, r in sorted(rows)) + "\n"


def dvae_clean_cost_table() -> str:
    """D-VAE's clean-data cost at the default stages, per run: seed, machine (CPU model) and compensation, each
    against the undefended accuracy of its own seed on its own kind of machine (``same_machine_clean_ref``)."""
    rows = []
    for f, d, e, comp in _default_stage_runs("clean"):
        ref = same_machine_clean_ref(d)
        cost = "—" if ref is None else f"{100 * (ref - e['test_acc']):.2f}"
        seed = d.get("seed", 0)
        rows.append(((seed, comp, f.stem), f"| {f.stem} | {_measured_on(f)} | {_cpu(d)} | {seed} | "
                     f"{_comp_cell(comp)} | {_pct(e['test_acc'])} | "
                     f"{_pct(ref)} | {cost} |"))
    head = ("| run | measured | CPU | seed | compensation (p/σ) | D-VAE on clean data | undefended, same seed and "
            "machine | cost (points) |\n" + "|---" * 8 + "|\n")
    return head + "\n".join(r for _, r in sorted(rows)) + "\n"


def dvae_epochs_table() -> str:
    """Stage epochs at the default κ₂ and latent: per attack, each D-VAE run by its stage-1/stage-2 epochs, with
    recovery (against the row's undefended accuracy and clean reference), δ left, stage 1's p̂ and training time."""
    _, rows = collect()
    want = dvae_defaults()
    lines = []
    for a in ATTACKS + ["clean"]:
        runs = {}
        for f in _dvae_run_files(a):
            e = _load(f).get("entries", {}).get("dvae", {})
            s = dvae_setting(e) if e.get("done") else {}
            keys = ("kappa2", "latent", "despeckle")  # and no compensation: it came after these runs
            if s and [s[k] for k in keys] == [want[k] for k in keys] and s["compensation"] == NO_COMP:
                runs.setdefault((s["epochs"], s["stage2_epochs"]), (f.stem, e))  # the first file per setting
        if len(runs) < 2:  # nothing to compare
            continue
        r = rows[a]
        for (e1, e2), (stem, e) in sorted(runs.items()):
            acc, st1, st2 = e["test_acc"], e.get("stages", {}).get("1", {}), e.get("stages", {}).get("2", {})
            rec = None if a == "clean" else _ratio(acc, r["none"], r["clean_ref"])
            left = e.get("fidelity", {}).get("poison_retained")
            lines.append(f"| {a.upper() if a != 'clean' else 'none (clean data)'} | {stem} | {e1}/{e2} | "
                         f"{_pct(acc)} | {'—' if rec is None else f'{rec:.3f}'} | "
                         f"{'—' if left is None else f'{left:.3f}'} | "
                         f"{e.get('fidelity', {}).get('psnr_purified', float('nan')):.2f} | "
                         f"{st1.get('output', {}).get('p_rms', float('nan')):.4f} | "
                         f"{st1.get('train_seconds', float('nan')):.0f} | "
                         f"{st2.get('train_seconds', float('nan')):.0f} |")
    head = ("| attack | run | epochs (stage 1/2) | D-VAE accuracy | recovery | poison left | PSNR purified (dB) | "
            "stage-1 per-class p̂ RMS | stage-1 training (s) | stage-2 training (s) |\n" + "|---" * 10 + "|\n")
    return head + "\n".join(lines) + "\n"


def kappa_table() -> str:
    """The κ sweep(s): final KL per latent position against κ, and PSNR of x̂."""
    lines = []
    for f in sorted(RES.glob("dvae_*_kappa*.json")):
        d = _load(f)
        for row in d.get("kappa_table", []):
            lines.append(f"| {f.stem} | {row['kappa']:g} | {row['final_kl']:.3f} | {row['psnr_xhat']:.2f} |")
    head = "| run | κ | final KL (nats / latent position) | PSNR of x̂ (dB) |\n|---|---|---|---|\n"
    return head + "\n".join(lines) + "\n"


def fidelity_table() -> str:
    """eclipse_fidelity.py runs (untagged and ``--tag``): per variant, the share of each poison left and PSNRs vs
    the clean originals. Each run trains its own diffusion models, so compare variants within one run."""
    runs = [(f.stem, _load(f).get("entries", {})) for f in sorted(RES.glob("eclipse_fidelity*.json"))]
    done = [e for _, ent in runs for e in ent.values() if e.get("done")]
    attacks = list(dict.fromkeys(e["attack"] for e in done if e["attack"] != "clean"))
    head = ("| run | variant | s / image | PSNR on clean images (dB) | "
            + " | ".join(f"{a.upper()}: poison left (PSNR in → out)" for a in attacks)
            + " |\n|---|---|---|---|" + "---|" * len(attacks) + "\n")
    lines = []
    for run, ent in runs:
        for v in dict.fromkeys(e["variant"] for e in ent.values() if e.get("done")):
            c = ent.get(f"{v}/clean", {})
            cells = []
            for a in attacks:
                e = ent.get(f"{v}/{a}", {})
                cells.append(f"{e['poison_retained']:.3f} ({e['psnr_poisoned']:.1f} → {e['psnr_purified']:.1f})"
                             if e.get("done") else "—")
            lines.append(f"| {run} | {v} | {c.get('seconds_per_image', float('nan')):.3f} | "
                         f"{c.get('psnr_purified', float('nan')):.2f} | " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"


def despeckle_table() -> str:
    """ECLIPSE at t* = 200 with and without the despeckle pre-filter (tags ``t200`` and ``t200_ds``), beside the
    filter alone; accuracy in % and recovery against the efficacy table's undefended and clean references."""
    clean, rows = collect()
    lines, pairs = [], []
    for a in [*ATTACKS, "clean"]:
        plain = _acc(_load(RES / f"eclipse_{a}_t200.json").get("entries", {}), "A+B+C")
        ds_ent = _load(RES / f"eclipse_{a}_t200_ds.json").get("entries", {})
        with_ds, alone = _acc(ds_ent, "A+B+C"), _acc(ds_ent, "despeckle")
        if with_ds is None and alone is None:
            continue
        r = rows[a]
        rr = [None if a == "clean" else _ratio(v, r["none"], r["clean_ref"]) for v in (alone, plain, with_ds)]
        if rr[1] is not None and rr[2] is not None:
            pairs.append((rr[1], rr[2]))
        cells = [_pct(v) + (f" ({x:.3f})" if x is not None else "")
                 for v, x in zip((alone, plain, with_ds), rr, strict=True)]
        lines.append(f"| {a if a == 'clean' else a.upper()} | {_pct(r['none'])} | " + " | ".join(cells) + " |")
    if not lines:
        return "Not measured yet.\n"
    head = ("| attack | no defense | despeckle alone | ECLIPSE t* = 200 | ECLIPSE t* = 200 + despeckle 0.15 |\n"
            "|---|---|---|---|---|\n")
    note = (f"\n\nOver the {len(pairs)} attack(s) measured both ways: average recovery (in brackets) "
            f"**{statistics.mean(p for p, _ in pairs):.3f} without → {statistics.mean(d for _, d in pairs):.3f} with "
            "despeckle**.\n" if pairs else "\n")
    return head + "\n".join(lines) + note


# One column: (run tag, entry mode, column label); the run file is {prefix}_{attack}_{tag}.json.
Column = tuple[str, str, str]


def column_table(columns: list[Column], *, seconds: bool = False, prefix: str = "eclipse",
                 attacks: list[str] | None = None) -> str:
    """Runs side by side (ECLIPSE's by default), one column per (tag, mode): accuracy in % with the recovery against
    the efficacy table's references (attacks) or the cost against the same machine's clean reference (clean row),
    optionally the purification seconds, and the average recovery of each column over the attacks every compared
    column has (a fair comparison, which the table's own average is not). Rows with no entry in any column, or (given
    ``attacks``) of another attack, are left out."""
    _, rows = collect()
    lines, recs, foreign = [], {label: {} for *_, label in columns}, False
    for a in [*(ATTACKS if attacks is None else [x for x in ATTACKS if x in attacks]), "clean"]:
        files = {tag: _load(RES / f"{prefix}_{a}_{tag}.json") for tag, _, _ in columns}
        accs = [_acc(files[tag].get("entries", {}), mode) for tag, mode, _ in columns]
        if all(acc is None for acc in accs):
            continue
        r, cells, ref = rows[a], [], None
        for (tag, mode, label), acc in zip(columns, accs, strict=True):
            if acc is None:
                cells.append("—")
                continue
            e = files[tag]["entries"][mode]
            secs = f", {e['purify_seconds']:.0f} s" if seconds and e.get("purify_seconds") else ""
            if a == "clean":
                own, mark = same_machine_clean_ref(files[tag]), ""
                if own is None:  # no same-machine reference: the efficacy table's, marked as such
                    own, mark = r["clean_ref"], "†"
                    foreign = True
                ref = own if ref is None else ref
                cells.append(_pct(acc) + f" (cost {100 * (own - acc):.2f}{mark})" + secs)
            else:
                rr = _ratio(acc, r["none"], r["clean_ref"])
                if rr is not None:
                    recs[label][a] = rr
                cells.append(_pct(acc) + (f" ({rr:.3f})" if rr is not None else "") + secs)
        none = _pct(ref if a == "clean" and ref is not None else r["none"])
        lines.append(f"| {a if a == 'clean' else a.upper()} | {none} | " + " | ".join(cells) + " |")
    if not lines:
        return "Not measured yet.\n"
    head = ("| attack | no defense | " + " | ".join(label for *_, label in columns) + " |\n|"
            + "---|" * (len(columns) + 2) + "\n")
    cols = [label for *_, label in columns if len(recs[label]) >= 2]
    common = sorted(set.intersection(*(set(recs[c]) for c in cols))) if cols else []
    note = ""
    if len(common) >= 2:
        note = (f"\nAverage recovery over the {len(common)} attacks measured in each of these columns "
                f"({', '.join(a.upper() for a in common)}): "
                + "; ".join(f"{c} **{statistics.mean(recs[c][a] for a in common):.3f}**" for c in cols) + ".\n")
    # a column that shares more attacks with the first than every column does: its pairwise comparison as well
    first = cols[0] if cols else None
    pairs = [(c, sorted(set(recs[c]) & set(recs[first]))) for c in cols[1:]]
    wider = [(c, both) for c, both in pairs if len(both) > len(common) and len(both) >= 2]
    if wider:
        note += "\n" + "".join(
            f"- Average recovery over the {len(both)} attacks that two columns share "
            f"({', '.join(a.upper() for a in both)}): {c} **{statistics.mean(recs[c][a] for a in both):.3f}**; "
            f"{first} {statistics.mean(recs[first][a] for a in both):.3f}.\n" for c, both in wider)
    if foreign:
        note += ("\n† against the efficacy table's clean reference: no clean reference with the same classifier recipe "
                 "and seed was measured on that run's machine.\n")
    return head + "\n".join(lines) + "\n" + note


# What training the diffusion model only on the timesteps purification visits (t < train_t_max) costs in accuracy,
# and t* = 300, with the despeckle filter (2026-12-05)
DS_VARIANTS: list[Column] = [("t200_ds", "A+B+C", "t* = 200, model trained on t < 400"),
                             ("t200_ds_allT", "A+B+C", "t* = 200, model trained on all 4,000 timesteps"),
                             ("t300_ds", "A+B+C", "t* = 300, model trained on t < 400")]


COMP_TAG = "t300_ds_b"  # the compensation ablation at the current defaults (2026-12-05, one machine, one model)
COMP_MODES = [("A", "A (diffusion only)"), ("A+gray", "A + gray (B)"), ("A+noise", "A + noise (C)"),
              ("A+B+C", "A+B+C")]  # labelled with the σ its entries recorded (the default changed on 2026-12-05)


def comp_table() -> str:
    """Table 4 at the t* = 300 defaults of 2026-12-05 (despeckle): each compensation variant on one purified set
    per attack, the swept strengths (``A+B+C@noise_std=…``) after them, and B+C alone (no diffusion) on clean data
    (``eclipse_clean_comp.json``)."""
    files = [_load(RES / f"eclipse_{a}_{COMP_TAG}.json").get("entries", {}) for a in [*ATTACKS, "clean"]]
    swept = sorted({m for ents in files for m in ents if "@" in m})  # e.g. A+B+C@noise_std=0.025
    sigmas = {((e.get("train_transform") or {}).get("params") or {}).get("noise_std")
              for ents in files for m, e in ents.items() if m == "A+B+C" and e.get("done")}
    if len(sigmas) > 1:  # one column must mean one setting
        raise SystemExit(f"the {COMP_TAG} A+B+C entries mix compensation noise {sorted(map(str, sigmas))}")
    sigma = next(iter(sigmas), None)
    abc_label = "A+B+C" if sigma is None else f"A+B+C, σ = {sigma:g}" + (" (paper)" if sigma == 0.05 else "")
    cols = [(COMP_TAG, m, abc_label if m == "A+B+C" else label) for m, label in COMP_MODES]
    cols += [(COMP_TAG, m, m.replace("@", ", ").replace("noise_std=", "σ = ").replace("gray_p=", "p = "))
             for m in swept]
    return column_table([*cols, ("comp", "B+C", "B+C (no diffusion)")])


# t* = 300 against t* = 400 at the current compensation (σ = 0.025), on one diffusion model (the t300_ds_b fit); the
# t* = 300 column is the σ = 0.025 sweep entry of the compensation ablation
DEPTH: list[Column] = [("t300_ds_b", "A+B+C@noise_std=0.025", "t* = 300"), ("t400_ds_b", "A+B+C", "t* = 400")]
# the compensation swept at t* = 400 on the same purified sets: training-only variants (2026-12-06)
SWEEP400: list[Column] = [("t400_ds_b", "A+B+C", "p = 0.4, σ = 0.025"),
                          ("t400_ds_b", "A+B+C@noise_std=0.0375", "p = 0.4, σ = 0.0375"),
                          ("t400_ds_b", "A+B+C@gray_p=0.6", "p = 0.6, σ = 0.025 (default since 2026-12-06)"),
                          ("t400_ds_b", "A+B+C@gray_p=0.8", "p = 0.8, σ = 0.025")]


# t* = 500 from a model trained on t < 500 (2026-12-06, late night; another machine, purification compiled) beside
# the default t* = 400 (the t400_ds_b purified sets at p = 0.6); all with despeckle, at p = 0.6 and σ = 0.025 unless
# the label says otherwise (training-only variants of the same t* = 500 purified sets)
DEPTH500: list[Column] = [("t400_ds_b", "A+B+C@gray_p=0.6", "t* = 400 (default)"),
                          ("t500_ds", "A+B+C", "t* = 500, model trained on t < 500"),
                          ("t500_ds", "A+gray", "t* = 500, σ = 0 (grayscale only)"),
                          ("t500_ds", "A+B+C@gray_p=0.4", "t* = 500, p = 0.4")]


# the diffusion model trained twice as long (1,600 steps) at t* = 500 (2026-12-06, night; the Intel VM of the t500_ds
# runs, purification compiled): what the CPU default's short training costs in accuracy
STEPS1600: list[Column] = [("t500_ds", "A+B+C@gray_p=0.4", "800 steps (p = 0.4)"),
                           ("t500_ds_s1600", "A+B+C@gray_p=0.4", "1,600 steps (p = 0.4)"),
                           ("t500_ds", "A+B+C", "800 steps (p = 0.6)"),
                           ("t500_ds_s1600", "A+B+C", "1,600 steps (p = 0.6)")]
# the 1,600-step t < 500 model purifying from the default t* = 400 at the default compensation (2026-12-07, the same
# Intel VM), beside the previous default (800 steps, t < 400; measured on the AMD machine) and the 1,600-step
# t* = 500 column; the second column was the default until the 5-step change of the same day (STEPS5)
T400_S1600: list[Column] = [("t400_ds_b", "A+B+C@gray_p=0.6", "previous default: t* = 400, 800 steps"),
                            ("t400_m500_s1600", "A+B+C", "t* = 400, 1,600 steps"),
                            ("t400_m500_s1600", "A+B+C@gray_p=0.4", "t* = 400, 1,600 steps, p = 0.4"),
                            ("t500_ds_s1600", "A+B+C@gray_p=0.4", "t* = 500, 1,600 steps, p = 0.4")]


# 5 respaced reverse steps instead of 10, with the same 1,600-step model from t* = 400 (2026-12-07, the Intel VM): the
# 10-step attack runs purified compiled, the 5-step ones eager (as the defaults run); the eager 10-step clean run
# gives the clean row a like-for-like purification time
STEPS5: list[Column] = [("t400_m500_s1600", "A+B+C", "10 reverse steps (compiled)"),
                        ("t400_m500_s1600_eager", "A+B+C", "10 reverse steps (eager)"),
                        ("t400_m500_s1600_k5", "A+B+C", "5 reverse steps (eager)")]


# the same 1,600 training steps drawn only from the 5 timesteps the default purification runs the model at
# (train_timesteps=visited) against uniform t < 500 (2026-12-07, the Intel VM, eager, 5 reverse steps)
VISITED: list[Column] = [("t400_m500_s1600_k5", "A+B+C", "trained on t < 500 (default)"),
                         ("t400_vis_s1600", "A+B+C", "trained on the 5 visited timesteps only")]

# the diffusion model's training compute spent another way (2026-12-07, the Intel VM, eager, 5 reverse steps): the
# learning rate decayed to 0 on a cosine (lr_schedule=cosine), and twice the updates at half the batch
SCHEDULE: list[Column] = [("t400_m500_s1600_k5", "A+B+C", "1,600 × 128, constant lr 1e-3 (default)"),
                          ("t400_cos_s1600", "A+B+C", "1,600 × 128, cosine decay from 1e-3 to 0"),
                          ("t400_b64_s3200", "A+B+C", "3,200 × 64, constant lr 1e-3")]

# the diffusion model's learning rate doubled (2e-3), against the default 1e-3 refitted on the same machine (2026-12-07,
# an AMD EPYC VM): recoveries against that VM's own undefended runs (the `amd` runs' `none` entries) and clean reference
LR_AMD: list[Column] = [("amd", "A+B+C", "lr 1e-3 (default)"), ("amd_lr2e3", "A+B+C", "lr 2e-3")]
LR_NONE_TAG = "amd"
LR_ATTACKS = ("tap",)  # the only attack both models purified; the other `amd` runs are the next table's
# the default on that AMD EPYC VM for every attack it purified (one model, fitted in the session of the lr runs), and
# the same fit repeated from scratch in the next session on the same VM (`amd2`): its determinism and its time
DEFAULT_AMD: list[Column] = [("amd", "A+B+C", "default (fit of 2026-12-07, third session)"),
                             ("amd2", "A+B+C", "default, fitted again (fourth session)")]

# D-VAE with ECLIPSE's compensation as the purified set's training-time transform (not in the paper; 2026-12-06); the
# "paired" runs load the compensated run's stages, so each compensated column reads against its paired neighbour
DVAE_COMP: list[Column] = [("dvae_e20_10", "dvae", "D-VAE, no compensation (the 12-03/04 stages)"),
                           ("dvae_paired", "dvae", "D-VAE, no compensation (the next column's stages)"),
                           ("dvae_comp", "dvae", "+ p = 0.4, σ = 0.025 (default since 2026-12-06)"),
                           ("dvae_comp_gray", "dvae", "+ p = 0.4, σ = 0 (gray only)"),
                           ("dvae_comp_s05", "dvae", "+ p = 0.4, σ = 0.05"),
                           ("dvae_comp_p06", "dvae", "+ p = 0.6, σ = 0.025"),
                           ("dvae_ds", "dvae", "D-VAE + despeckle"),
                           ("dvae_ds_comp", "dvae", "+ despeckle, p = 0.4, σ = 0.025")]


def dvae_comp_table() -> str:
    # only the attacks measured in a column beyond the first, which alone has every attack
    measured = [a for a in ATTACKS
                if any(_acc(_load(RES / f"dvae_{a}_{tag}.json").get("entries", {}), mode) is not None
                       for tag, mode, _ in DVAE_COMP[1:])]
    return column_table(DVAE_COMP, prefix="dvae", attacks=measured)


def despeckle_fidelity_table() -> str:
    """benchmarks/despeckle_fidelity.py: per threshold, the filter on clean images and on each attack."""
    d = _load(RES / "despeckle_fidelity.json")
    if not d.get("rows"):
        return "Not measured yet.\n"
    attacks = list(d["rows"][0]["attacks"])
    head = ("| threshold | s / 1,000 images | clean pixels changed | clean PSNR (dB) | OPS pixels found | "
            + " | ".join(f"{a.upper()}: poison left" for a in attacks) + " |\n|" + "---|" * (5 + len(attacks)) + "\n")
    lines = []
    for r in d["rows"]:
        ops = r["attacks"].get("ops", {})
        lines.append(f"| {r['threshold']:g} | {r['s_per_1000']:.2f} | {100 * r['clean_pixels_changed']:.3f}% | "
                     f"{r['clean_psnr']:.1f} | " + (f"{100 * ops['pixels_found']:.1f}%" if ops else "—") + " | "
                     + " | ".join(f"{r['attacks'][a]['poison_left']:.3f}" for a in attacks) + " |")
    return head + "\n".join(lines) + f"\n\n{d['pool']:,} images, {d['date']}.\n"


def tstar_table() -> str:
    """ECLIPSE efficacy at larger t* (``eclipse_<attack>_t<N>.json``, tagged runs of eclipse_bench.py), beside the
    paper's t* = 100 of the untagged run; the column of the current default t* says so. Accuracy of A+B+C (and of A
    alone where measured), in %."""
    found: dict[str, dict[int, dict]] = {}
    for f in sorted(RES.glob("eclipse_*_t[0-9]*.json")):
        m = re.fullmatch(r"eclipse_(\w+?)_t(\d+)", f.stem)
        ent = _load(f).get("entries", {})
        e = ent.get("A+B+C") or ent.get("A") or {}
        if not m or not e.get("done"):
            continue
        t_star = int((e.get("config") or {}).get("t_star", m.group(2)))
        found.setdefault(m.group(1), {})[t_star] = ent
    if not found:
        return "Not measured yet.\n"
    ts = sorted({t for by_t in found.values() for t in by_t})
    clean, rows = collect()
    t_def = EclipseConfig().t_star
    head = ("| attack | no defense | t* = 100 (paper) | "
            + " | ".join(f"t* = {t}" + (" (default)" if t == t_def else "") for t in ts)
            + " |\n|---|---|---|" + "---|" * len(ts) + "\n")
    lines = []
    ratios: dict[int, list[tuple[float, float]]] = {t: [] for t in ts}  # (recovery at t*=100, at t) per attack

    def cell(abc: float | None, only_a: float | None, rr: float | None) -> str:
        return (_pct(abc) + (f" (A: {_pct(only_a)})" if only_a is not None else "")
                + (f", recovery {rr:.3f}" if rr is not None else ""))

    for a in [*ATTACKS, "clean"]:
        if a not in found:
            continue
        r = rows[a]
        base_rr = _ratio(r["eclipse_t100"], r["none"], r["clean_ref"]) if a != "clean" else None
        cells = []
        for t in ts:
            ent = found[a].get(t, {})
            abc = _acc(ent, "A+B+C")
            rr = _ratio(abc, r["none"], r["clean_ref"]) if a != "clean" else None
            if rr is not None and base_rr is not None:
                ratios[t].append((base_rr, rr))
            cells.append(cell(abc, _acc(ent, "A"), rr))
        lines.append(f"| {a if a == 'clean' else a.upper()} | {_pct(r['none'])} | "
                     f"{cell(r['eclipse_t100'], r['A'], base_rr)} | " + " | ".join(cells) + " |")
    notes = [f"Over the {len(v)} attack(s) measured at t* = {t}: average recovery "
             f"**{statistics.mean(b for b, _ in v):.3f} at t* = 100 → {statistics.mean(x for _, x in v):.3f} "
             f"at t* = {t}**." for t, v in ratios.items() if v]
    return head + "\n".join(lines) + "\n\n" + " ".join(notes) + ("\n" if notes else "")


def dvae_fidelity_table() -> str:
    """dvae_bench.py entries that recorded ``fidelity``: the share of δ left in the output, PSNRs vs the clean
    images."""
    lines = []
    for f in sorted(RES.glob("dvae_*_*.json")):
        for key, e in _load(f).get("entries", {}).items():
            fid = e.get("fidelity") if e.get("done") else None
            if not fid:
                continue
            if "poison_retained" in fid:
                lines.append(f"| {f.stem} | {key} | {fid['poison_retained']:.3f} | {fid['psnr_poisoned']:.2f} | "
                             f"{fid['psnr_purified']:.2f} |")
            else:  # clean data: PSNR of the output against its (clean) input
                lines.append(f"| {f.stem} | {key} | — | — | {fid['psnr_purified']:.2f} |")
    head = ("| run | entry | poison left (share of δ) | PSNR poisoned vs clean (dB) | PSNR purified vs clean (dB) |\n"
            "|---|---|---|---|---|\n")
    return head + "\n".join(lines) + "\n"


def _measured_on(path: Path) -> str:
    """The day a result was measured: its recorded date, else the day its file was last committed."""
    date = _load(path).get("date")
    if date:
        return date
    out = subprocess.run(["git", "log", "-1", "--format=%cs", "--", str(path)], cwd=REPO, capture_output=True,
                         text=True, check=False).stdout.strip()
    return out or "uncommitted"


def dvae_kappa2_table() -> str:
    """Every D-VAE run (both stages) of an attack that has a tagged run (``--tag k2_K``, ``--tag e20_10`` …), by
    setting (κ₂, latent, epochs of stages 1/2), with the day it was measured and the CPU (rows compare only within
    one day's machine: see the cross-machine spread in docs/dvae.md). Runs with a wider stage 2 are in
    ``dvae_stage2_width_table``, the other stage-2 variants in ``dvae_stage2_variants_table``."""
    lines, defaults = [], dvae_defaults()
    tagged = sorted(RES.glob("dvae_*_dvae_*.json"))
    for a in dict.fromkeys(f.stem.split("_")[1] for f in tagged):
        rows = []
        for f in _dvae_run_files(a):
            d = _load(f)
            e = d.get("entries", {}).get("dvae", {})
            if not e.get("done"):
                continue
            setting = dvae_setting(e)
            if any(setting[k] != defaults[k] for k in ("stage2_scale", "stage2_passes", "stage2_denoise")):
                continue  # a wider stage 2, more passes or a denoising one: the stage2_width and stage2_variants tables
            k2, latent = setting["kappa2"], setting["latent"]
            ep = (setting["epochs"], setting["stage2_epochs"])
            st2 = e.get("stages", {}).get("2", {})
            left = e.get("fidelity", {}).get("poison_retained")
            day = _measured_on(f)
            ds, comp = setting["despeckle"], setting["compensation"]
            seed = d.get("seed", 0)
            name = a.upper() if a != "clean" else "none (clean data)"
            rows.append((k2, latent, ep, ds, comp, day, seed, f"| {name} | {f.stem} | {day} | {_cpu(d)} | {seed} | "
                         f"{k2:g} | {latent} | {ep[0]}/{ep[1]} | {ds:g} | {_comp_cell(comp)} | "
                         f"{_pct(e['test_acc'])} | "
                         f"{st2.get('output', {}).get('psnr_xhat', float('nan')):.2f} | "
                         f"{st2.get('final', {}).get('kl', float('nan')):.3f} | "
                         f"{'—' if left is None else f'{left:.3f}'} |"))
        lines += [r[-1] for r in sorted(rows, key=lambda r: r[:-1])]
    head = ("| attack | run | measured | CPU | seed | κ₂ | latent | epochs (stage 1/2) | despeckle | "
            "compensation (p/σ) | D-VAE accuracy | stage-2 x̂ PSNR (dB) | stage-2 final KL | poison left |\n"
            + "|---" * 14 + "|\n")
    return head + "\n".join(lines) + "\n"


NONE_TAG = "intel_none"  # undefended runs re-measured on the Intel Xeon VM of the 2026-12-06/07 ECLIPSE runs


def _vm_references(attacks: list[str], none_tag: str = NONE_TAG
                   ) -> tuple[dict[str, float | None], float | None, tuple[str | None, str | None]]:
    """Seed 0's undefended accuracies (the ``none`` entries of the ``none_tag`` runs), that machine's clean reference
    and its key."""
    runs = {a: _load(RES / f"eclipse_{a}_{none_tag}.json") for a in attacks}
    none = {a: _acc(run.get("entries", {}), "none") for a, run in runs.items()}
    first = next((run for run in runs.values() if run), {})
    return none, same_machine_clean_ref(first), _machine_key(first)


def same_machine_table(columns: list[Column], none_tag: str = NONE_TAG, attacks: tuple[str, ...] = ()) -> str:
    """The columns' recoveries against references all measured on their own machine: the undefended accuracy of
    the ``none_tag`` runs (``--tag intel_none`` by default) and the same machine's clean reference, beside the
    efficacy table's references, which mix machines and precisions; and each column's clean-data cost against that
    reference. A cell whose run was made on another kind of machine is left empty. ``attacks`` limits the rows
    (default: every attack with an undefended run)."""
    _, rows = collect()
    lines, avg_tab = [], {c[2]: [] for c in columns}  # recoveries against the efficacy table's references
    # (defended, undefended, clean) per attack on this VM; the recoveries against its references are derived from it
    accs: dict[str, list[tuple[float, float, float]]] = {c[2]: [] for c in columns}
    refs, clean_vm, key = _vm_references([x for x in ATTACKS if x != "urp" and (not attacks or x in attacks)],
                                         none_tag)
    for a, none_vm in refs.items():
        if none_vm is None:
            continue
        cells = []
        for tag, mode, label in columns:
            run = _load(RES / f"eclipse_{a}_{tag}.json")
            acc = _acc(run.get("entries", {}), mode)
            if acc is None or _machine_key(run) != key or clean_vm is None:
                cells.append("—")
                continue
            vm = _ratio(acc, none_vm, clean_vm)
            tab = _ratio(acc, rows[a]["none"], rows[a]["clean_ref"])
            if vm is None or tab is None:  # the attack does not poison the recipe: no recovery to average
                cells.append(f"{_pct(acc)} (—)")
                continue
            avg_tab[label].append(tab)
            accs[label].append((acc, none_vm, clean_vm))
            cells.append(f"{_pct(acc)} ({vm:.3f}; {tab:.3f})")
        lines.append(f"| {a.upper()} | {_pct(none_vm)} | {_pct(rows[a]['none'])} | " + " | ".join(cells) + " |")
    if not lines or clean_vm is None:
        return "Not measured yet.\n"
    costs = []
    for tag, mode, _ in columns:
        run = _load(RES / f"eclipse_clean_{tag}.json")
        acc = _acc(run.get("entries", {}), mode)
        costs.append("—" if acc is None or _machine_key(run) != key
                     else f"{_pct(acc)} (cost {100 * (clean_vm - acc):.2f})")
    lines.append(f"| none (clean data) | {_pct(clean_vm)} | {_pct(rows['clean']['clean_ref'])} | " + " | ".join(costs)
                 + " |")
    head = ("| attack | no defense, this VM | no defense, efficacy table | "
            + " | ".join(f"{label}: accuracy (recovery, this VM's references; the table's)" for *_, label in columns)
            + " |\n|" + "---|" * (len(columns) + 3) + "\n")
    note = (f"\nClean reference on this VM: {_pct(clean_vm)} (the efficacy table's: "
            f"{_pct(rows['clean']['clean_ref'])}). Average recovery over the attacks of each column, against this VM's "
            "references and against the table's: "
            + "; ".join(f"{label} ({len(accs[label])} attack{'s' * (len(accs[label]) > 1)}) "
                        f"**{statistics.mean(_ratio(*t) for t in accs[label]):.3f}** and "
                        f"{statistics.mean(avg_tab[label]):.3f}"
                        + (f" (in the paper's form, from the averaged accuracies, this VM's references: "
                           f"{_paper_form(accs[label]):.3f})" if len(accs[label]) > 1 else "")
                        for *_, label in columns if accs[label]) + ".\n")
    return head + "\n".join(lines) + "\n" + note


def dvae_amd_table() -> str:
    """D-VAE's default runs against undefended accuracies measured on an AMD EPYC VM (the ``amd`` ECLIPSE runs'
    ``none`` entries, 2026-12-07, ``…-v1300``) and that VM's clean reference, beside the efficacy table's
    mixed-machine references, in two columns: the efficacy table's runs (AMD EPYC VMs of 2026-12-06, ``…-v1272``; not
    the references' VM, though both give the same clean reference, 81.42% at seed 0) and the default runs made on the
    references' own VM (one VM: every number of the row measured there)."""
    _, rows = collect()
    refs, clean_amd, key = _vm_references([x for x in ATTACKS if x != "urp"], LR_NONE_TAG)
    if clean_amd is None:
        return "Not measured yet.\n"
    lines = []
    tab: list[float] = []  # the table's runs' recoveries against the efficacy table's references
    # (defended, undefended, clean) against the AMD references, per column; its recoveries are derived from these
    accs: dict[str, list[tuple[float, float, float]]] = {"vm": [], "one": []}
    for a in [x for x in ATTACKS if x != "urp"]:
        none = refs.get(a)
        table_acc = _acc(dvae_default_run(a).get("entries", {}), "dvae")
        one_acc = _acc(dvae_default_run(a, machine=key).get("entries", {}), "dvae")
        if table_acc is None and one_acc is None:
            continue
        cells = [_pct(none), _pct(rows[a]["none"]), _pct(table_acc)]
        r_vm = None if none is None or table_acc is None else _ratio(table_acc, none, clean_amd)
        r_tab = None if table_acc is None else _ratio(table_acc, rows[a]["none"], rows[a]["clean_ref"])
        r_one = None if none is None or one_acc is None else _ratio(one_acc, none, clean_amd)
        cells += ["—" if r is None else f"{r:.3f}" for r in (r_vm, r_tab)]
        cells += [_pct(one_acc), "—" if r_one is None else f"{r_one:.3f}"]
        if r_vm is not None and r_tab is not None:  # both or neither: the two means cover the same attacks
            tab.append(r_tab)
            accs["vm"].append((table_acc, none, clean_amd))
        if r_one is not None:
            accs["one"].append((one_acc, none, clean_amd))
        lines.append(f"| {a.upper()} | " + " | ".join(cells) + " |")
    if not lines:
        return "Not measured yet.\n"
    dvc = _acc(dvae_default_run("clean").get("entries", {}), "dvae")
    dvc_one = _acc(dvae_default_run("clean", machine=key).get("entries", {}), "dvae")
    cost = lambda acc: "—" if acc is None else f"cost {100 * (clean_amd - acc):.2f}"  # noqa: E731
    lines.append(f"| none (clean data) | {_pct(clean_amd)} | {_pct(rows['clean']['clean_ref'])} | {_pct(dvc)} | "
                 f"{cost(dvc)} | — | {_pct(dvc_one)} | {cost(dvc_one)} |")
    head = ("| attack | no defense, AMD EPYC VM | no defense, efficacy table | D-VAE, efficacy table's run | "
            "recovery, AMD references | recovery, the table's references | D-VAE, run on the references' VM | "
            "recovery, one VM |\n|---|---|---|---|---|---|---|---|\n")

    def avg(k: str, what: str, extra: str = "") -> str:
        n = len(accs[k])
        if not n:
            return f"{what}: none yet"
        form = (f"in the paper's form, from the accuracies averaged against the AMD references, "
                f"{_paper_form(accs[k]):.3f}") if n > 1 else ""
        inner = "; ".join(x for x in (extra, form) if x)
        mean = statistics.mean(_ratio(*t) for t in accs[k])
        return f"{what} ({n} attack{'s' * (n > 1)}): **{mean:.3f}**" + (f" ({inner})" * bool(inner))

    table_refs = f"{statistics.mean(tab):.3f} against the table's references" if tab else ""
    note = ("\nAverage recovery against the AMD references: " + avg("vm", "the efficacy table's runs", table_refs)
            + "; " + avg("one", "the runs on the references' VM") + f". Clean reference on the AMD VMs: "
            f"{_pct(clean_amd)}.\n")
    return head + "\n".join(lines) + "\n" + note


# ECLIPSE settings measured at three classifier seeds on the Intel Xeon VM: seed 0 from the run files, seeds 1 and 2
# from seed_spread.py files on the same purified sets: (label, seed-0 run tag, {seed: attacks' spread tag},
# {seed: (clean spread tag, set name)})
SEED_ROWS = [
    ("t < 500, 5 steps (default)", "t400_m500_s1600_k5",
     {1: "attacks_t400_m500_s1600_k5", 2: "attacks_t400_m500_s1600_k5_seed2"},
     {1: ("clean_t400_m500_s1600_k5", "k5"), 2: ("clean_t400_m500_s1600_k5", "k5")}),
    ("t < 500, 10 steps (compiled)", "t400_m500_s1600",
     {1: "attacks_t400_m500_s1600", 2: "attacks_t400_m500_s1600_seed2"},
     {1: ("clean_t400_m500_s1600", "m500s1600_t400"), 2: ("clean_t400_m500_s1600", "m500s1600_t400")}),
    ("5 visited timesteps, 5 steps", "t400_vis_s1600", {},
     {1: ("clean_t400_vis_s1600", "vis"), 2: ("clean_t400_vis_s1600", "vis")}),
    ("3,200 steps at batch 64, 5 steps", "t400_b64_s3200",
     {1: "attacks_t400_b64_s3200", 2: "attacks_t400_b64_s3200_seed2"},
     {1: ("clean_t400_b64_s3200", "b64"), 2: ("clean_t400_b64_s3200", "b64")}),
]
UNDEFENDED_SPREAD = "undefended_intel"  # seed_spread.py --sets tap=attack:tap,… --seeds 1,2
CLEAN_REF_SEEDS = {1: "dvae_clean_none_s1", 2: "dvae_clean_none_s2"}  # the VM's clean reference at seeds 1 and 2


def _spread(tag: str, key: str) -> float | None:
    return _load(RES / f"seed_spread_{tag}.json").get("runs", {}).get(key, {}).get("test_acc")


def seed_recovery_table() -> str:
    """Average recovery over the seven attacks and clean-data cost per classifier seed, with every reference
    (undefended, clean) measured on the same VM and at the same seed, beside the efficacy table's references."""
    _, rows = collect()
    attacks = [a for a in ATTACKS if a != "urp"]
    ref0, clean0, key0 = _vm_references(attacks)
    refs = {0: (ref0, clean0)}
    for seed, f in CLEAN_REF_SEEDS.items():
        refs[seed] = ({a: _spread(UNDEFENDED_SPREAD, f"{a}/seed{seed}") for a in attacks},
                      _acc(_load(RES / f"{f}.json").get("entries", {}), "none"))
    lines = []
    for label, tag0, spreads, clean_spreads in SEED_ROWS:
        cells, same, table, paper, costs = [], [], [], [], []
        for seed in (0, 1, 2):
            none, clean = refs[seed]
            if seed == 0:  # the run files; one made on another machine than the references counts as missing
                runs = {a: _load(RES / f"eclipse_{a}_{tag0}.json") for a in [*attacks, "clean"]}
                acc = {a: _acc(runs[a].get("entries", {}), "A+B+C") if _machine_key(runs[a]) == key0 else None
                       for a in runs}
                cacc = acc.pop("clean")
            else:
                acc = {a: _spread(spreads[seed], f"{a}/seed{seed}") if seed in spreads else None for a in attacks}
                ct, cn = clean_spreads.get(seed, ("", ""))
                cacc = _spread(ct, f"{cn}/seed{seed}") if ct else None
            cost = None if cacc is None or clean is None else 100 * (clean - cacc)
            if all(acc[a] is not None and none[a] is not None for a in attacks) and clean is not None:
                r_same = statistics.mean(_ratio(acc[a], none[a], clean) for a in attacks)
                r_tab = statistics.mean(_ratio(acc[a], rows[a]["none"], rows[a]["clean_ref"]) for a in attacks)
                r_paper = _paper_form([(acc[a], none[a], clean) for a in attacks])
                same.append(r_same)
                table.append(r_tab)
                paper.append(r_paper)
                cell = f"**{r_same:.3f}** ({r_tab:.3f}; paper's form {r_paper:.3f})"
            else:
                cell = "—"
            if cost is not None:
                costs.append(cost)
            cells.append(cell + ("" if cost is None else f", cost {cost:.2f}"))
        mean = (f"**{statistics.mean(same):.3f}** ({statistics.mean(table):.3f}; paper's form "
                f"{statistics.mean(paper):.3f})" if len(same) == 3 else "—")
        mean += f", cost {statistics.mean(costs):.2f}" if len(costs) == 3 else ""
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {mean} |")
    head = ("| setting | seed 0 | seed 1 | seed 2 | mean of three seeds |\n|---|---|---|---|---|\n")
    note = ("\nEach cell: average recovery over the seven attacks (AR, EM, LSP, OPS, REM, SEP, TAP) against undefended "
            "and clean references measured on this VM at the same classifier seed (in parentheses: against the "
            "efficacy table's seed-0 references, mixed machines; then the ratio as the ECLIPSE paper and issue #4 "
            "compute it, (mean defended − mean undefended) / (clean − mean undefended) over the same seven attacks "
            "and this VM's references), and the clean-data cost in points against this "
            "VM's clean reference at that seed (" + ", ".join(
                f"seed {s}: {_pct(refs[s][1])}" for s in (0, 1, 2)) + ").\n")
    return head + "\n".join(lines) + "\n" + note


# docs/eclipse.md blocks that are one column_table each: (block, columns, with purification seconds)
COLUMN_TABLES = [("ds_variants", DS_VARIANTS, True), ("depth", DEPTH, True), ("sweep400", SWEEP400, False),
                 ("depth500", DEPTH500, True), ("steps1600", STEPS1600, True), ("t400_s1600", T400_S1600, True),
                 ("steps5", STEPS5, True), ("visited", VISITED, True), ("schedule", SCHEDULE, True)]


def replace_block(doc: Path, name: str, body: str) -> None:
    text = doc.read_text(encoding="utf-8")
    pat = re.compile(rf"(<!-- begin:{re.escape(name)} -->\n).*?(<!-- end:{re.escape(name)} -->)", re.S)
    if not pat.search(text):
        raise SystemExit(f"{doc}: no block {name!r}")
    doc.write_text(pat.sub(lambda m: m.group(1) + body + m.group(2), text), encoding="utf-8")


def main() -> None:
    ecl, dv = REPO / "docs" / "eclipse.md", REPO / "docs" / "dvae.md"
    blocks = {ecl: {"efficacy": lambda: efficacy_table("eclipse", "ECLIPSE"), "ablation": ablation_table,
                    "cost": cost_table, "fidelity": fidelity_table, "tstar": tstar_table,
                    "despeckle": despeckle_table, "despeckle_fidelity": despeckle_fidelity_table,
                    "comp": comp_table, "same_machine": functools.partial(same_machine_table, VISITED + SCHEDULE[1:]),
                    "seed_recovery": seed_recovery_table,
                    "lr_amd": functools.partial(same_machine_table, LR_AMD, LR_NONE_TAG, LR_ATTACKS),
                    "default_amd": functools.partial(same_machine_table, DEFAULT_AMD, LR_NONE_TAG),
                    **{name: functools.partial(column_table, cols, seconds=secs)
                                           for name, cols, secs in COLUMN_TABLES}},
              dv: {"efficacy": lambda: efficacy_table("dvae", "D-VAE"), "ablation": dvae_ablation_table,
                   "amd_refs": dvae_amd_table,
                   "cost": dvae_cost_table, "kappa": kappa_table, "fidelity": dvae_fidelity_table,
                   "kappa2": dvae_kappa2_table, "epochs": dvae_epochs_table, "comp": dvae_comp_table,
                   "clean_cost": dvae_clean_cost_table, "fit_time": dvae_fit_time_table,
                   "stage_sets": dvae_stage_sets_table, "stage2_width": dvae_stage2_width_table,
                   "stage2_variants": dvae_stage2_variants_table}}
    for doc, tables in blocks.items():
        for name, table in tables.items():
            replace_block(doc, name, table())
    print(ecl, dv)


if __name__ == "__main__":
    main()
