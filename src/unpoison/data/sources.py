"""Dataset specs → :class:`ImageDataset`.

Specs: ``cifar10`` (= ``cifar10:train``), ``cifar10:test``, ``cifar100[:test]``, ``gtsrb[:test]``,
``<name>:cpu`` / ``<name>:cpu-clean`` (the ``cpu`` profile's poison pool and clean pool of the training split),
``imagefolder:PATH``, a path to an unpoison ``.npz``, or a plain ``.npz`` with x_train/y_train/x_test/y_test
(``PATH.npz:test`` for its test split). Builtin datasets are looked up under ``--data-root`` or ``$UNPOISON_DATA``,
as ``<name>.npz`` or in torchvision's official layout; if neither is there and ``download`` is on, torchvision
downloads the official release.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from unpoison.data.dataset import ImageDataset
from unpoison.data.splits import PROFILES, profile_split
from unpoison.data.storage import import_png, load_dataset, read_npz
from unpoison.errors import UnpoisonError
from unpoison.registry import Registry

ENV_ROOT = "UNPOISON_DATA"
DEFAULT_ROOT = Path.home() / ".cache" / "unpoison" / "data"

# name -> loader(root, train: bool, download: bool) -> (images, labels, class_names)
Loader = Callable[[Path, bool, bool], tuple[np.ndarray, np.ndarray, tuple[str, ...]]]
SOURCES: Registry[Loader] = Registry("dataset")


def data_root(root: str | os.PathLike[str] | None = None) -> Path:
    if root:
        return Path(root).expanduser()
    env = os.environ.get(ENV_ROOT)
    return Path(env).expanduser() if env else DEFAULT_ROOT


def _hint(name: str, root: Path) -> str:
    return (f"{name} not found under {root} (looked for {name}.npz and torchvision's layout). "
            f"Unpack the bundled copy with `python ../shared/data/unpack.py DIR` and pass --data-root DIR "
            f"(or set {ENV_ROOT}=DIR), or run with network access so torchvision can download it")


@functools.lru_cache(maxsize=4)
def _plain_npz(path: str, mtime: float) -> dict[str, np.ndarray]:
    return read_npz(path)


def _from_plain_npz(path: Path, train: bool) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    z = _plain_npz(str(path), path.stat().st_mtime)
    xk, yk = ("x_train", "y_train") if train else ("x_test", "y_test")
    if xk not in z or yk not in z:
        raise UnpoisonError(f"{path} lacks {xk}/{yk}; expected a plain npz with x_train, y_train, x_test, y_test")
    if "class_names" in z:
        names = tuple(str(c) for c in z["class_names"].tolist())
    else:
        names = tuple(str(i) for i in range(int(z[yk].max()) + 1))
    return z[xk], z[yk], names


def _torchvision_cifar(cls_name: str, folder: str, name: str) -> Loader:
    def load(root: Path, train: bool, download: bool) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
        npz = root / f"{name}.npz"
        if npz.is_file():
            return _from_plain_npz(npz, train)
        import torchvision.datasets as tvd

        if not (root / folder).is_dir() and not download:
            raise UnpoisonError(_hint(name, root))
        try:
            ds = getattr(tvd, cls_name)(str(root), train=train, download=download and not (root / folder).is_dir())
        except Exception as e:  # network errors, corrupt archives: all mean "cannot get the data"
            raise UnpoisonError(_hint(name, root) + f" (torchvision said: "
                                f"{str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
        return np.asarray(ds.data), np.asarray(ds.targets), tuple(ds.classes)

    return load


SOURCES.register("cifar10", _torchvision_cifar("CIFAR10", "cifar-10-batches-py", "cifar10"))
SOURCES.register("cifar100", _torchvision_cifar("CIFAR100", "cifar-100-python", "cifar100"))


@SOURCES.register("gtsrb")
def _gtsrb(root: Path, train: bool, download: bool) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    # torchvision's GTSRB has variable-size crops; unpoison uses the 32x32 npz (see ../shared/data/README.md).
    npz = root / "gtsrb.npz"
    if not npz.is_file():
        raise UnpoisonError(f"gtsrb not found under {root} (looked for gtsrb.npz). Unpack the bundled copy with "
                            f"`python ../shared/data/unpack.py DIR` and pass --data-root DIR (or set {ENV_ROOT}=DIR)")
    return _from_plain_npz(npz, train)


def load_builtin(name: str, split: str = "train", root: str | os.PathLike[str] | None = None,
                 download: bool = False) -> ImageDataset:
    loader = SOURCES.get(name)
    r = data_root(root)
    if split in ("train", "test"):
        x, y, names = loader(r, split == "train", download)
        return ImageDataset(x, y, names, source=f"{name}:{split}")
    profile = split[: -len("-clean")] if split.endswith("-clean") else split
    if profile not in PROFILES:
        known = ["train", "test"] + [p for q in PROFILES for p in (q, f"{q}-clean")]
        raise UnpoisonError(f"unknown split {split!r} for {name}; known: {', '.join(known)}")
    x, y, names = loader(r, True, download)
    pool, clean = profile_split(ImageDataset(x, y, names, source=f"{name}:train"), profile)
    out = clean if split.endswith("-clean") else pool
    out.meta["profile"] = {"name": profile, "part": "clean pool" if split.endswith("-clean") else "poison pool"}
    return out


def load(spec: str | os.PathLike[str], root: str | os.PathLike[str] | None = None,
         download: bool = False) -> ImageDataset:
    """Resolve a dataset spec (see the module docstring)."""
    spec = str(spec).strip()
    if not spec:
        raise UnpoisonError("empty dataset spec")
    if spec.startswith("imagefolder:"):
        return import_png(spec[len("imagefolder:"):])
    name, _, split = spec.partition(":")
    if name.lower() in SOURCES and "/" not in spec:
        return load_builtin(name.lower(), split or "train", root, download)
    path = Path(spec)
    split = ""
    if not path.exists() and ":" in spec:
        head, _, tail = spec.rpartition(":")
        if tail in ("train", "test"):
            path, split = Path(head), tail
    if path.is_dir():
        return import_png(path)
    if path.suffix == ".npz" or path.exists():
        z_keys = _npz_keys(path)
        if "__meta__" in z_keys:
            if split:
                raise UnpoisonError(f"{path} is an unpoison dataset file; it has no {split!r} split")
            return load_dataset(path)
        x, y, names = _from_plain_npz(path, split != "test")
        return ImageDataset(x, y, names, source=f"{path}:{split or 'train'}")
    known = ", ".join(SOURCES.names())
    raise UnpoisonError(f"unknown dataset {spec!r}: not a file, folder or builtin name ({known}, imagefolder:PATH)")


def _npz_keys(path: Path) -> list[str]:
    import zipfile

    if not path.exists():
        raise UnpoisonError(f"file not found: {path}")
    try:
        with zipfile.ZipFile(path) as zf:
            return [n[:-4] if n.endswith(".npy") else n for n in zf.namelist()]
    except (zipfile.BadZipFile, OSError) as e:
        raise UnpoisonError(f"{path} is not a readable .npz file (truncated or corrupt): {e}") from None
