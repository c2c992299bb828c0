"""Data layer: dataset objects, storage, sources and splits. Imports nothing from the rest of unpoison."""

from unpoison.data.dataset import ImageDataset, PoisonedDataset
from unpoison.data.sources import data_root, load, load_builtin
from unpoison.data.splits import PROFILES, carve_trusted, profile_split, stratified_split, stratified_subset
from unpoison.data.storage import export_png, import_png, load_dataset, read_npz, save_dataset

__all__ = [
    "ImageDataset", "PoisonedDataset", "load", "load_builtin", "data_root", "save_dataset", "load_dataset",
    "read_npz", "export_png", "import_png", "stratified_subset", "stratified_split", "carve_trusted",
    "profile_split", "PROFILES",
]
