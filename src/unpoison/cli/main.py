"""The ``unpoison`` command. Every command returns typed results; this module only parses and prints.

Bad input raises :class:`UnpoisonError` somewhere below; :func:`main` turns it into one line on stderr and exit
status 2. Outputs are written atomically and never replace an existing file unless ``--overwrite`` is given.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from unpoison.cli import output
from unpoison.errors import UnpoisonError

app = typer.Typer(
    name="unpoison", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Defend image classifiers against data poisoning: poison, purify, train and evaluate on real data.",
)
data_app = typer.Typer(no_args_is_help=True, help="Inspect, export and subset datasets.", rich_markup_mode=None)
app.add_typer(data_app, name="data")

DataRoot = Annotated[Optional[Path], typer.Option(
    "--data-root", envvar="UNPOISON_DATA", help="Folder holding cifar10.npz etc. (default: $UNPOISON_DATA).")]
Json = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace the output if it exists.")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed; the same seed gives the same result.")]
Sets = Annotated[Optional[list[str]], typer.Option("--set", help="Override a parameter: --set key=value (repeatable).")]
ConfigFile = Annotated[Optional[Path], typer.Option("--config", help="YAML file of parameters (--set wins over it).")]
Preset = Annotated[Optional[str], typer.Option(
    "--preset", help="Start from a named parameter set, e.g. paper (the published values); --config and --set "
    "override it.")]


def _check_out(out: Path, overwrite: bool, *inputs: str | Path | None) -> None:
    for inp in inputs:
        if inp is not None and Path(str(inp)).exists() and Path(str(inp)).resolve() == out.resolve():
            raise UnpoisonError(f"--out {out} is the input file; choose another output")
    if out.exists() and not overwrite:
        raise UnpoisonError(f"{out} already exists; pass --overwrite to replace it")


def _method_help(kind: str, registry: Any) -> str:
    lines = [f"Known {kind}s and their parameters (set with --set key=value):", "", "\b"]
    for name in registry.names():
        cls = registry.get(name)
        params = ", ".join(f"{k}={v}" for k, v in cls.config_class().to_dict().items())
        lines.append(f"  {name:<14} {cls.summary}")
        lines.append(f"  {'':<14} {params}")
    return "\n".join(lines)


def _attack_epilog() -> str:
    from unpoison.attacks import ATTACKS

    return _method_help("attack", ATTACKS)


def _purify_epilog() -> str:
    from unpoison.defenses import PURIFIERS

    return _method_help("purifier", PURIFIERS)


# --- attack --------------------------------------------------------------------------------------------------------
@app.command(epilog=_attack_epilog())
def attack(
    name: Annotated[str, typer.Argument(help="Attack name (listed below).")],
    data: Annotated[str, typer.Option("--data", help="Dataset spec to poison, e.g. cifar10:cpu.")],
    out: Annotated[Path, typer.Option("--out", help="Poisoned dataset to write (.npz).")],
    preset: Preset = None, sets: Sets = None, config: ConfigFile = None, seed: Seed = 0, data_root: DataRoot = None,
    overwrite: Overwrite = False, json_: Json = False,
) -> None:
    """Poison a dataset; the output keeps full ground truth (which samples, original labels, trigger)."""
    from unpoison.attacks import ATTACKS
    from unpoison.config import build_config
    from unpoison.data import load, save_dataset

    acls = ATTACKS.get(name)
    cfg = build_config(acls.config_class, preset=preset, file=config, overrides=sets)
    _check_out(out, overwrite, data)
    ds = load(data, root=data_root)
    t0 = time.perf_counter()
    pds = acls(cfg).poison(ds, seed=seed)
    secs = time.perf_counter() - t0
    save_dataset(pds, out)
    summary = pds.summary() | {"out": str(out), "seconds": round(secs, 2)}
    if json_:
        output.print_json(summary)
    else:
        output.kv(f"{name} → {out}", {k: v for k, v in summary.items() if k not in ("class_names", "class_counts")})


# --- purify --------------------------------------------------------------------------------------------------------
@app.command(epilog=_purify_epilog())
def purify(
    name: Annotated[str, typer.Argument(help="Purifier name (listed below).")],
    data: Annotated[str, typer.Option("--data", help="Poisoned dataset (.npz or spec).")],
    out: Annotated[Path, typer.Option("--out", help="Purified dataset to write (.npz).")],
    clean: Annotated[Optional[str], typer.Option("--clean", help="Clean data spec for methods that use it.")] = None,
    model: Annotated[Optional[Path], typer.Option(
        "--model", help="Reuse a trained model (methods with a model_path parameter, e.g. eclipse); "
        "skips training.")] = None,
    preset: Preset = None, sets: Sets = None, config: ConfigFile = None, seed: Seed = 0, data_root: DataRoot = None,
    overwrite: Overwrite = False, json_: Json = False,
) -> None:
    """Purify a (poisoned) training set; ground truth and labels are kept, pixels are rewritten."""
    from unpoison.config import build_config
    from unpoison.data import load, save_dataset
    from unpoison.defenses import PURIFIERS

    pcls = PURIFIERS.get(name)
    cfg = build_config(pcls.config_class, preset=preset, file=config, overrides=sets)
    if model is not None:
        if "model_path" not in cfg.field_names():
            raise UnpoisonError(f"purifier {name!r} cannot reuse a model (--model); it has no model_path parameter")
        if not model.is_file():
            raise UnpoisonError(f"--model {model} not found")
        cfg = cfg.replace(model_path=str(model))
    _check_out(out, overwrite, data, clean)
    ds = load(data, root=data_root)
    clean_ds = load(clean, root=data_root) if clean else None
    if clean_ds is not None and clean_ds.split == "test":
        raise UnpoisonError("--clean must not be a test split; use training data (e.g. cifar10:cpu-clean)")
    t0 = time.perf_counter()
    purifier = pcls(cfg)
    if "seed" in cfg.field_names():
        purifier = pcls(cfg.replace(seed=seed))
    result = purifier.fit_purify(ds, clean_ds)
    secs = time.perf_counter() - t0
    save_dataset(result, out)
    summary = {"purifier": name, "out": str(out), "size": len(result), "seconds": round(secs, 2),
               "params": cfg.to_dict(), "train_transform": result.meta.get("train_transform")}
    if json_:
        output.print_json(summary)
    else:
        output.kv(f"{name} → {out}", summary)


# --- train ---------------------------------------------------------------------------------------------------------
@app.command()
def train(
    data: Annotated[str, typer.Option("--data", help="Training set spec or .npz.")],
    out: Annotated[Path, typer.Option("--out", help="Model to write (.safetensors, plus a .json beside it).")],
    arch: Annotated[Optional[str], typer.Option("--arch", help="Model name (see `unpoison models`).")] = None,
    recipe: Annotated[str, typer.Option("--recipe", help="quick | standard")] = "quick",
    epochs: Annotated[Optional[int], typer.Option("--epochs")] = None,
    test: Annotated[Optional[str], typer.Option("--test", help="Test spec to evaluate on at the end.")] = None,
    train_transform: Annotated[str, typer.Option(
        "--train-transform", help="auto: apply the dataset's training-time transform (e.g. ECLIPSE's compensation) "
        "afresh every epoch; once: apply it once before training; off: ignore it.")] = "auto",
    checkpoint: Annotated[Optional[Path], typer.Option(
        "--checkpoint", help="Resume/save per-epoch state here.")] = None,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda | mps")] = "auto",
    sets: Sets = None, config: ConfigFile = None, seed: Seed = 0, data_root: DataRoot = None,
    overwrite: Overwrite = False, json_: Json = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
) -> None:
    """Train a classifier with one of the built-in recipes."""
    from unpoison.config import build_config
    from unpoison.data import load
    from unpoison.models import save_model
    from unpoison.training import TrainConfig, train_on

    if train_transform not in ("auto", "off", "once"):
        raise UnpoisonError(f"--train-transform must be auto, off or once; got {train_transform!r}")
    extra = list(sets or [])
    if arch:
        extra.append(f"arch={arch}")
    if epochs is not None:
        extra.append(f"epochs={epochs}")
    cfg = build_config(TrainConfig, preset=recipe, file=config, overrides=extra)
    _check_out(out, overwrite, data)
    ds = load(data, root=data_root)
    test_ds = load(test, root=data_root) if test else None
    if test_ds is not None:
        _check_compatible(ds.num_classes, ds.image_shape, test_ds)
    result = train_on(ds, cfg, test=test_ds, seed=seed, train_transform=train_transform,  # type: ignore[arg-type]
                      device=device, checkpoint=checkpoint, progress=progress and not json_)
    info = {"data": data, "recipe": recipe, "train_transform": train_transform,
            "applied_transform": ds.meta.get("train_transform") if train_transform != "off" else None}
    save_model(result.model, out, extra={"class_names": list(ds.class_names), "training": result.to_dict() | info})
    summary = {"out": str(out), "test_acc": result.test_acc, "seconds": round(result.seconds, 1),
               "epochs": cfg.epochs, "arch": cfg.arch} | info
    if json_:
        output.print_json(summary | {"history": result.to_dict()["history"]})
    else:
        output.kv(f"trained {cfg.arch} → {out}", summary)


def _check_compatible(num_classes: int, shape: tuple[int, ...], test_ds: Any) -> None:
    if test_ds.num_classes != num_classes:
        raise UnpoisonError(f"the test set has {test_ds.num_classes} classes but the model has {num_classes}")
    if test_ds.image_shape[-1] != shape[-1]:
        raise UnpoisonError(f"the test set has {test_ds.image_shape[-1]} channels but the model expects {shape[-1]}")


# --- evaluate ------------------------------------------------------------------------------------------------------
@app.command()
def evaluate(
    model: Annotated[Path, typer.Option("--model", help="Model file (.safetensors).")],
    test: Annotated[str, typer.Option("--test", help="Test set spec, e.g. cifar10:test.")],
    backdoor: Annotated[Optional[Path], typer.Option(
        "--backdoor", help="Backdoor-poisoned .npz: its trigger is stamped on the test set for ASR and R-Acc.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 1000,
    data_root: DataRoot = None, json_: Json = False,
) -> None:
    """Clean accuracy, and attack success rate / robust accuracy for a backdoor."""
    from unpoison.attacks import BackdoorAttack
    from unpoison.data import PoisonedDataset, load, load_dataset
    from unpoison.metrics import backdoor_metrics
    from unpoison.models import load_model
    from unpoison.training import predict

    net, info = load_model(model)
    test_ds = load(test, root=data_root)
    _check_compatible(info["num_classes"], (0, 0, info["in_channels"]), test_ds)
    pred = predict(net, test_ds, batch_size=batch_size)
    result: dict[str, Any] = {"model": str(model), "test": test, "n_test": len(test_ds),
                              "clean_acc": float((pred == test_ds.labels).mean())}
    if backdoor is not None:
        pds = load_dataset(backdoor)
        if not isinstance(pds, PoisonedDataset):
            raise UnpoisonError(f"{backdoor} is not a poisoned dataset")
        trig = BackdoorAttack.from_poisoned(pds).poison_test(test_ds)
        ptrig = predict(net, trig, batch_size=batch_size)
        m = backdoor_metrics(pred, test_ds.labels, ptrig, trig.original_labels, trig.labels)
        result |= {"attack": pds.attack.get("name"), **m.to_dict()}
    if json_:
        output.print_json(result)
    else:
        output.kv("evaluation", {k: (output.pct(v) if k in ("clean_acc", "asr", "robust_acc") else v)
                                 for k, v in result.items()})


# --- data ----------------------------------------------------------------------------------------------------------
@data_app.command("info")
def data_info(spec: Annotated[str, typer.Argument(help="Dataset spec or file.")], data_root: DataRoot = None,
              json_: Json = False) -> None:
    """Size, shape, classes, per-class counts and poison count."""
    from unpoison.data import load

    summary = load(spec, root=data_root).summary()
    if json_:
        output.print_json(summary)
        return
    counts = summary.pop("class_counts")
    names = summary.pop("class_names")
    output.kv(spec, summary)
    output.table("per class", ["class", "images"], [[n, c] for n, c in zip(names, counts, strict=True)])


@data_app.command("export")
def data_export(spec: Annotated[str, typer.Argument(help="Dataset spec or file.")],
                out: Annotated[Path, typer.Option("--out", help="New folder (ImageFolder layout + manifest).")],
                data_root: DataRoot = None, json_: Json = False) -> None:
    """Write PNGs in ImageFolder layout, with a manifest that keeps the ground truth."""
    from unpoison.data import export_png, load

    ds = load(spec, root=data_root)
    export_png(ds, out)
    res = {"out": str(out), "images": len(ds), "classes": ds.num_classes}
    output.print_json(res) if json_ else output.kv("exported", res)


@data_app.command("subset")
def data_subset(spec: Annotated[str, typer.Argument(help="Dataset spec or file.")],
                out: Annotated[Path, typer.Option("--out", help="Output .npz.")],
                per_class: Annotated[Optional[int], typer.Option("--per-class")] = None,
                fraction: Annotated[Optional[float], typer.Option("--fraction")] = None,
                seed: Seed = 0, data_root: DataRoot = None, overwrite: Overwrite = False, json_: Json = False) -> None:
    """A seeded, class-stratified subset."""
    from unpoison.data import load, save_dataset, stratified_subset

    if (per_class is None) == (fraction is None):
        raise UnpoisonError("give exactly one of --per-class or --fraction")
    _check_out(out, overwrite, spec)
    sub = stratified_subset(load(spec, root=data_root), per_class=per_class, fraction=fraction, seed=seed)
    save_dataset(sub, out)
    res = {"out": str(out), "images": len(sub), "class_counts": sub.class_counts().tolist()}
    output.print_json(res) if json_ else output.kv("subset", res)


# --- models --------------------------------------------------------------------------------------------------------
@app.command("models")
def models_cmd(json_: Json = False) -> None:
    """List the model architectures."""
    from unpoison.models import create_model, list_models

    rows = []
    for name in list_models():
        m = create_model(name, num_classes=10)
        rows.append([name, sum(p.numel() for p in m.parameters()), m.feature_dim])
    if json_:
        output.print_json([{"name": r[0], "params": r[1], "feature_dim": r[2]} for r in rows])
    else:
        output.table("models (10 classes, width 1)", ["name", "parameters", "feature dim"], rows)


# --- demo ----------------------------------------------------------------------------------------------------------
@app.command()
def demo(data_root: DataRoot = None, seed: Seed = 0,
         epochs: Annotated[Optional[int], typer.Option("--epochs", help="Override the quick recipe's epochs.")] = None,
         json_: Json = False, progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True) -> None:
    """On real CIFAR-10 at the cpu profile: poison with LSP, train undefended and after JPEG-10, against clean."""
    from unpoison.bench.demo import run_demo

    res = run_demo(data_root=data_root, seed=seed, epochs=epochs, progress=progress and not json_,
                   log=None if json_ else output.err_console.print)
    if json_:
        output.print_json(res)
        return
    output.table("unpoison demo — CIFAR-10, cpu profile (20,000 train / 10,000 test), quick recipe",
                 ["training set", "test accuracy", "seconds"],
                 [[r["name"], output.pct(r["test_acc"]), r["seconds"]] for r in res["rows"]])
    output.console.print(f"recovery ratio of JPEG-10 against LSP: {res['recovery_jpeg']:.3f} "
                         "((defended − poisoned) / (clean − poisoned); 1 = full recovery)")


def main(argv: list[str] | None = None) -> None:
    """Entry point: one-line errors with exit status 2 for bad input."""
    try:
        app(args=argv, prog_name="unpoison", standalone_mode=True)
    except UnpoisonError as e:
        output.err_console.print(f"error: {e}", markup=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        output.err_console.print("interrupted", markup=False)
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
