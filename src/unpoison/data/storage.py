"""Saving and loading datasets: ``.npz`` (never pickled) and ImageFolder-style PNG folders.

An unpoison ``.npz`` holds the per-sample arrays under their field names, trigger artifacts under
``artifact__<name>``, and everything else as a JSON string under ``__meta__``. It is always read with
``allow_pickle=False``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from unpoison.data.dataset import ImageDataset, PoisonedDataset
from unpoison.errors import UnpoisonError
from unpoison.utils.io import atomic_path, to_jsonable

FORMAT = "unpoison-dataset"
FORMAT_VERSION = 1
_ARTIFACT = "artifact__"
_POISON_FIELDS = ("is_poison", "original_labels", "clean_images", "poison_norms", "is_cover")


def save_dataset(ds: ImageDataset, path: str | os.PathLike[str]) -> Path:
    """Write ``ds`` atomically to ``path`` (a ``.npz``); returns the path."""
    path = Path(path)
    if path.suffix != ".npz":
        raise UnpoisonError(f"dataset files must end in .npz; got {path}")
    meta: dict[str, Any] = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "kind": "poisoned" if ds.is_poisoned else "clean",
        "source": ds.source,
        "meta": to_jsonable(ds.meta),
    }
    arrays: dict[str, np.ndarray] = {
        "images": ds.images,
        "labels": ds.labels,
        "class_names": np.asarray(ds.class_names, dtype=str),
        "indices": ds.indices,  # type: ignore[dict-item]
    }
    if isinstance(ds, PoisonedDataset):
        meta["attack"] = to_jsonable(ds.attack)
        for name in _POISON_FIELDS:
            val = getattr(ds, name)
            if val is not None:
                arrays[name] = val
        for name, arr in ds.artifacts.items():
            arrays[_ARTIFACT + name] = arr
    arrays["__meta__"] = np.asarray(json.dumps(meta))
    with atomic_path(path, suffix=".tmp.npz") as tmp:
        np.savez(tmp, **arrays)
    return path


def _open_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        raise UnpoisonError(f"file not found: {path}")
    if path.is_dir():
        raise UnpoisonError(f"expected an .npz file, got a directory: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise UnpoisonError(f"{path} holds pickled Python objects; "
                                "refusing to load it (allow_pickle=False)") from None
        raise UnpoisonError(f"{path} is not a readable .npz file: {e}") from None
    except (zipfile.BadZipFile, EOFError, OSError) as e:
        raise UnpoisonError(f"{path} is not a readable .npz file (truncated or corrupt): {e}") from None


def read_npz(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz``, read without pickle; one-line errors for missing, corrupt or pickled files."""
    return _open_npz(Path(path))


def load_dataset(path: str | os.PathLike[str]) -> ImageDataset:
    """Load a file written by :func:`save_dataset` (clean or poisoned)."""
    path = Path(path)
    z = _open_npz(path)
    if "__meta__" not in z:
        raise UnpoisonError(f"{path} is not an unpoison dataset file (no __meta__ entry)")
    try:
        meta = json.loads(str(z["__meta__"]))
    except json.JSONDecodeError:
        raise UnpoisonError(f"{path}: the __meta__ entry is not valid JSON") from None
    if meta.get("format") != FORMAT:
        raise UnpoisonError(f"{path} is not an unpoison dataset file (format {meta.get('format')!r})")
    for key in ("images", "labels", "class_names"):
        if key not in z:
            raise UnpoisonError(f"{path} lacks the {key!r} array")
    common = dict(
        images=z["images"],
        labels=z["labels"],
        class_names=tuple(z["class_names"].tolist()),
        source=meta.get("source", ""),
        indices=z.get("indices"),
        meta=meta.get("meta", {}),
    )
    if meta.get("kind") == "poisoned":
        return PoisonedDataset(
            **common,
            **{name: z.get(name) for name in _POISON_FIELDS},
            attack=meta.get("attack", {}),
            artifacts={k[len(_ARTIFACT):]: v for k, v in z.items() if k.startswith(_ARTIFACT)},
        )
    return ImageDataset(**common)


# --- PNG folders ---------------------------------------------------------------------------------------------------
MANIFEST = "unpoison-manifest.json"


def _safe_dirname(name: str) -> str:
    bad = '/\\:*?"<>|'
    out = "".join("_" if ch in bad else ch for ch in name).strip() or "class"
    return out


def export_png(ds: ImageDataset, out_dir: str | os.PathLike[str], workers: int = 4) -> Path:
    """Write ``ds`` as ``out_dir/<class>/<i>.png`` plus a manifest with every per-sample ground-truth field.

    Refuses to write into an existing non-empty directory; the folder appears only when complete.
    """
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UnpoisonError(f"{out} already exists and is not empty; choose a new directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        dirs = [_safe_dirname(c) for c in ds.class_names]
        if len(set(dirs)) != len(dirs):
            dirs = [f"{i:03d}_{d}" for i, d in enumerate(dirs)]
        for d in dirs:
            (tmp / d).mkdir()
        width = max(5, len(str(len(ds))))
        files = [f"{dirs[y]}/{i:0{width}d}.png" for i, y in enumerate(ds.labels)]

        def write(i: int) -> None:
            img = ds.images[i]
            Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(tmp / files[i])

        with ThreadPoolExecutor(workers) as pool:  # PNG encoding releases the GIL
            list(pool.map(write, range(len(ds))))
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "kind": "poisoned" if ds.is_poisoned else "clean",
            "source": ds.source,
            "class_names": list(ds.class_names),
            "class_dirs": dirs,
            "files": files,
            "labels": ds.labels.tolist(),
            "indices": ds.indices.tolist(),  # type: ignore[union-attr]
            "meta": to_jsonable(ds.meta),
        }
        if isinstance(ds, PoisonedDataset):
            manifest["attack"] = to_jsonable(ds.attack)
            manifest["is_poison"] = ds.is_poison.tolist()  # type: ignore[union-attr]
            manifest["original_labels"] = ds.original_labels.tolist()  # type: ignore[union-attr]
            if ds.poison_norms is not None:
                manifest["poison_norms"] = ds.poison_norms.tolist()
            if ds.is_cover is not None:
                manifest["is_cover"] = ds.is_cover.tolist()
            if ds.artifacts or ds.clean_images is not None:
                # Arrays that PNGs cannot carry losslessly in the manifest go into a side npz.
                side = {f"{_ARTIFACT}{k}": v for k, v in ds.artifacts.items()}
                if ds.clean_images is not None:
                    side["clean_images"] = ds.clean_images
                np.savez(tmp / "unpoison-arrays.npz", **side)
                manifest["arrays"] = "unpoison-arrays.npz"
        (tmp / MANIFEST).write_text(json.dumps(manifest))
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _read_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            if im.mode not in ("RGB", "L"):
                im = im.convert("RGB")
            return np.asarray(im)
    except (OSError, SyntaxError) as e:
        raise UnpoisonError(f"cannot read image {path}: {e}") from None


def _stack(images: list[np.ndarray], root: Path) -> np.ndarray:
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise UnpoisonError(f"images under {root} have different sizes {sorted(shapes)[:3]}; "
                            "resize them to one size first")
    arr = np.stack(images)
    return arr[..., None] if arr.ndim == 3 else arr


def import_png(root: str | os.PathLike[str], workers: int = 4) -> ImageDataset:
    """Read an ImageFolder layout; a folder written by :func:`export_png` comes back with its ground truth."""
    root = Path(root)
    if not root.is_dir():
        raise UnpoisonError(f"image folder not found: {root}")
    manifest_path = root / MANIFEST
    if manifest_path.exists():
        try:
            man = json.loads(manifest_path.read_text())
        except json.JSONDecodeError:
            raise UnpoisonError(f"{manifest_path} is not valid JSON") from None
        files = [root / f for f in man["files"]]
        with ThreadPoolExecutor(workers) as pool:
            images = _stack(list(pool.map(_read_image, files)), root)
        common = dict(images=images, labels=np.asarray(man["labels"]), class_names=tuple(man["class_names"]),
                      source=man.get("source", ""), indices=np.asarray(man["indices"]), meta=man.get("meta", {}))
        if man.get("kind") == "poisoned":
            side = read_npz(root / man["arrays"]) if man.get("arrays") else {}
            return PoisonedDataset(
                **common,
                is_poison=np.asarray(man["is_poison"], dtype=bool),
                original_labels=np.asarray(man["original_labels"]),
                poison_norms=np.asarray(man["poison_norms"]) if "poison_norms" in man else None,
                is_cover=np.asarray(man["is_cover"], dtype=bool) if "is_cover" in man else None,
                clean_images=side.get("clean_images"),
                attack=man.get("attack", {}),
                artifacts={k[len(_ARTIFACT):]: v for k, v in side.items() if k.startswith(_ARTIFACT)},
            )
        return ImageDataset(**common)
    # Plain ImageFolder: torchvision's scanner decides classes (sorted folder names) and files.
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    try:
        classes, class_to_idx = find_classes(str(root))
        samples = make_dataset(str(root), class_to_idx, extensions=IMG_EXTENSIONS)
    except (FileNotFoundError, RuntimeError) as e:
        raise UnpoisonError(f"{root} is not an ImageFolder layout (class sub-folders of images): {e}") from None
    with ThreadPoolExecutor(workers) as pool:
        images = _stack(list(pool.map(lambda s: _read_image(Path(s[0])), samples)), root)
    return ImageDataset(images, np.asarray([s[1] for s in samples]), tuple(classes), source=f"imagefolder:{root}")
