"""Shared helpers for the benchmarks: machine facts, result files, and the resumable runs' options and preamble."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from unpoison.config import build_config, parse_overrides
from unpoison.data import ImageDataset, stratified_subset
from unpoison.training import TrainConfig

RESULTS = Path(__file__).resolve().parent / "results"
# the ECLIPSE parameters that decide a purified set: eclipse_bench.py refuses to resume across them, and
# purify_report.py picks the run at the current defaults by them
ECLIPSE_SETTING = ("t_star", "train_t_max", "sampler", "steps", "unet", "train_steps", "batch_size", "lr", "ema_decay",
                   "sparse_fraction", "sparse_size", "copies", "diffusion_steps", "gray_p", "noise_std", "despeckle",
                   "train_timesteps", "lr_schedule")
# what a setting added later had been in results recorded before it existed
ECLIPSE_SETTING_BEFORE = {"despeckle": 0.0, "train_timesteps": "range", "lr_schedule": "constant"}
CACHE = Path(__file__).resolve().parents[1] / ".cache"  # git-ignored
COMP_KEYS = ("gray_p", "noise_std")  # ECLIPSE's compensation strengths a benchmark may override


def parse_comp_overrides(where: str, parts: list[str]) -> dict[str, float]:
    """``["noise_std=0.025", …]`` (the ``@…`` suffixes of a mode or a set) → ``{"noise_std": 0.025}``. Exits on a key
    that is not gray_p / noise_std, a value that is not a number, or one out of range."""
    out: dict[str, float] = {}
    for part in parts:
        key, _, val = part.partition("=")
        if key not in COMP_KEYS:
            raise SystemExit(f"{where}: only @gray_p=… and @noise_std=… can be overridden; got {part!r}")
        try:
            value = float(val)
        except ValueError:
            raise SystemExit(f"{where}: {key} must be a number, got {val!r}") from None
        if not 0.0 <= value <= (1.0 if key == "gray_p" else float("inf")):
            raise SystemExit(f"{where}: {key} out of range")
        out[key] = value
    return out


def matmul_peak_gflops(n: int = 1024, repeats: int = 15) -> float:
    """Median fp32 matmul throughput on this machine (GFLOP/s) with torch's current thread count."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times) / 1e9


def interleaved_medians(steps: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds per call of each callable after one warm-up call each, their calls interleaved so that a slow
    spell of a shared machine falls on all of them alike."""
    for step in steps.values():
        step()
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(repeats):
        for k, step in steps.items():
            t0 = time.perf_counter()
            step()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def _cpu_model() -> str:
    """The CPU model name (timings from different machines of this kind differ up to ~3x: record which one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, object]:
    return {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_model": _cpu_model()}


def save(name: str, result: dict[str, object]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    p = RESULTS / f"{name}.json"
    tmp = p.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, p)
    return p


# --- resumable purification runs (eclipse_bench, dvae_bench) ------------------------------------------------------
def add_run_options(ap: argparse.ArgumentParser, *, per_class_help: str, set_help: str) -> None:
    """The test split, smoke-run subsets, purifier/attack overrides and classifier recipe
    (after a run's own options)."""
    ap.add_argument("--test", default="cifar10:test")
    ap.add_argument("--per-class", type=int, default=0, help=per_class_help)
    ap.add_argument("--test-per-class", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], dest="sets", help=set_help)
    ap.add_argument("--attack-set", action="append", default=[], dest="attack_sets")
    ap.add_argument("--recipe", default="quick")
    ap.add_argument("--train-epochs", type=int, default=None)
    ap.add_argument("--train-set", action="append", default=[], dest="train_sets",
                    help="classifier recipe override key=value (e.g. amp=off for fp32 on an AMX machine)")


def add_resume_options(ap: argparse.ArgumentParser) -> None:
    """--seed, --tag (part of the run's name) and --fresh: a run adds them after its own options."""
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tag", default="")
    ap.add_argument("--fresh", action="store_true")


def resume_run(bench: str, stem: str, args: argparse.Namespace,
               **fields: object) -> tuple[str, Path, Path, dict[str, object]]:
    """(name, checkpoint folder, result file, result) of a resumable run named ``stem`` plus ``_<tag>``.

    The checkpoints live in .cache/<bench>/<name>/ and the result in benchmarks/results/<name>.json, which a rerun
    picks up (the caller skips finished entries); ``--fresh`` deletes both first. ``fields``, the machine and the
    command line are recorded over what the file had, so the result names the machine of its latest run.
    """
    name = stem + (f"_{args.tag}" if args.tag else "")
    ckroot = CACHE / bench / name
    path = RESULTS / f"{name}.json"
    if args.fresh:
        shutil.rmtree(ckroot, ignore_errors=True)
        path.unlink(missing_ok=True)
    result = json.loads(path.read_text()) if path.exists() else {"entries": {}}
    result |= {**fields, "machine": machine(), "command": "python " + " ".join(sys.argv),
               "date": datetime.date.today().isoformat()}
    return name, ckroot, path, result


def subsets(pool: ImageDataset, test: ImageDataset, args: argparse.Namespace) -> tuple[ImageDataset, ImageDataset]:
    """The pool and test split cut to ``--per-class`` / ``--test-per-class`` per class when set (smoke runs)."""
    if args.per_class:
        pool = stratified_subset(pool, per_class=args.per_class, seed=args.seed)
    if args.test_per_class:
        test = stratified_subset(test, per_class=args.test_per_class, seed=args.seed)
    return pool, test


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The classifier recipe ``--recipe``, with ``--train-epochs`` epochs and ``--train-set`` overrides when given."""
    overrides = parse_overrides(getattr(args, "train_sets", []))
    if args.train_epochs:
        overrides["epochs"] = args.train_epochs
    return build_config(TrainConfig, preset=args.recipe, overrides=overrides or None)
