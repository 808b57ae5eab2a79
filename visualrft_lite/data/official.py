"""The four fine-grained classification sets of the paper, as their owners publish them.

    flowers102     flowers-102/{jpg/image_00001.jpg, imagelabels.mat, setid.mat}
    oxford_pets    oxford-iiit-pet/{images/*.jpg, annotations/trainval.txt, test.txt}
    fgvc_aircraft  fgvc-aircraft-2013b/data/{images/*.jpg, variants.txt, images_variant_*.txt}
    stanford_cars  stanford_cars/{devkit/cars_meta.mat, devkit/cars_train_annos.mat,
                   cars_test_annos_withlabels.mat, cars_train/, cars_test/}

`data.path` may name that folder or its parent (torchvision's `root`). torchvision supplies
the downloads and Flowers102's class names; the layouts are read here (scipy.io for the .mat
files), because torchvision's Flowers102 refuses any file whose md5 differs from the release
(a checksum mismatch is logged as a warning here, not a refusal).

Splits: k-shot sampling draws from the official training images (train + val where the
release separates them: Flowers102 has only 10 train images per class, too few for 16 shots)
and evaluation uses the official test list.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib
import importlib.util
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from visualrft_lite.data.common import ImageChecker, LoadResult
from visualrft_lite.data.folder import class_records
from visualrft_lite.errors import UserError

if TYPE_CHECKING:
    from visualrft_lite.config import DataConfig

log = logging.getLogger(__name__)

Split = Literal["train", "eval"]
# (image file, class index) pairs of one split
Items = list[tuple[Path, int]]


@dataclass(frozen=True)
class Official:
    """One released dataset: how to recognise its folder, and how to read and fetch it."""

    source: str  # the data.source value
    title: str
    folder: str  # the folder torchvision's download creates under root
    markers: tuple[str, ...]  # files that identify the layout, relative to `folder`
    layout: str  # the expected layout, for error messages
    url: str


def _loadmat(path: Path) -> dict[str, Any]:
    try:
        from scipy.io import loadmat
    except ImportError:
        raise UserError(f"reading {path.name} (a MATLAB file) needs scipy: pip install scipy") from None
    try:
        return loadmat(str(path), squeeze_me=True)
    except Exception as e:  # a truncated or foreign file
        raise UserError(f"cannot read {path}: {' '.join(str(e).split())[:200]}") from None


def _md5(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest()


@functools.cache
def _flowers_constants() -> dict[str, Any]:
    """`classes` and `_file_dict` of torchvision's Flowers102, read from its source file.

    Importing torchvision imports torch (seconds); the two constants are plain literals, so
    they are parsed instead, falling back to the import if the source is not where expected.
    """
    spec = importlib.util.find_spec("torchvision")
    source = Path(spec.origin).parent / "datasets" / "flowers102.py" if spec and spec.origin else None
    if source is not None and source.is_file():
        out: dict[str, Any] = {}
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                if node.targets[0].id in ("classes", "_file_dict"):
                    out[node.targets[0].id] = ast.literal_eval(node.value)
        if len(out) == 2:
            return out
    flowers = downloader("flowers102")
    return {"classes": list(flowers.classes), "_file_dict": dict(flowers._file_dict)}


def flowers_classes() -> list[str]:
    """torchvision's 102 Flowers102 names, index = official label - 1 ("pink primrose", ...)."""
    return list(_flowers_constants()["classes"])


def downloader(source: str) -> Any:
    """torchvision's dataset class for a source (its constructor downloads with download=True)."""
    name = {"flowers102": "Flowers102", "oxford_pets": "OxfordIIITPet", "fgvc_aircraft": "FGVCAircraft",
            "stanford_cars": "StanfordCars"}[source]
    return getattr(importlib.import_module("torchvision.datasets"), name)


def _read_flowers(base: Path) -> tuple[list[str], Items, Items]:
    for key in ("label", "setid"):
        name, md5 = _flowers_constants()["_file_dict"][key]
        if _md5(base / name) != md5:
            log.warning("%s differs from the official release (md5); reading it anyway", base / name)
    labels = [int(v) for v in _loadmat(base / "imagelabels.mat")["labels"].ravel()]  # 1-based class per image id
    sets = _loadmat(base / "setid.mat")

    def items(*keys: str) -> Items:
        ids = sorted(int(i) for k in keys for i in sets[k].ravel())  # 1-based image ids
        out = []
        for image_id in ids:
            if not 1 <= image_id <= len(labels):
                raise UserError(f"{base / 'setid.mat'} lists image {image_id}, but imagelabels.mat has {len(labels)} labels")
            out.append((base / "jpg" / f"image_{image_id:05d}.jpg", labels[image_id - 1] - 1))
        return out

    return flowers_classes(), items("trnid", "valid"), items("tstid")


def _read_pets(base: Path) -> tuple[list[str], Items, Items]:
    def rows(name: str) -> list[tuple[str, int]]:
        out = []
        for line in (base / "annotations" / name).read_text().splitlines():
            parts = line.split()
            if not parts or parts[0].startswith("#"):
                continue
            if len(parts) < 2 or not parts[1].isdigit():
                raise UserError(f"{base / 'annotations' / name}: expected 'image_id class_id species breed_id', got {line!r}")
            out.append((parts[0], int(parts[1]) - 1))
        return out

    train, test = rows("trainval.txt"), rows("test.txt")
    # torchvision's names: from the file name, each word title-cased (american_pit_bull_terrier
    # -> American Pit Bull Terrier), ordered by class id.
    by_id = {label: image_id.rsplit("_", 1)[0] for image_id, label in train + test}
    classes = [" ".join(part.title() for part in by_id[i].split("_")) for i in sorted(by_id)]
    if sorted(by_id) != list(range(len(by_id))):
        raise UserError(f"{base / 'annotations'}: class ids are not 1..{len(by_id)}")

    def items(pairs: list[tuple[str, int]]) -> Items:
        return [(base / "images" / f"{image_id}.jpg", label) for image_id, label in pairs]

    return classes, items(train), items(test)


def _read_aircraft(base: Path) -> tuple[list[str], Items, Items]:
    data = base / "data"
    classes = [line.strip() for line in (data / "variants.txt").read_text().splitlines() if line.strip()]
    index = {name: i for i, name in enumerate(classes)}

    def items(*names: str) -> Items:
        out = []
        for name in names:
            for line in (data / f"images_variant_{name}.txt").read_text().splitlines():
                if not line.strip():
                    continue
                image_id, _, variant = line.strip().partition(" ")
                if variant not in index:
                    raise UserError(f"{data / f'images_variant_{name}.txt'}: variant {variant!r} is not in variants.txt")
                out.append((data / "images" / f"{image_id}.jpg", index[variant]))
        return out

    train = items("trainval") if (data / "images_variant_trainval.txt").is_file() else items("train", "val")
    return classes, train, items("test")


def _read_cars(base: Path) -> tuple[list[str], Items, Items]:
    classes = [str(c) for c in _loadmat(base / "devkit" / "cars_meta.mat")["class_names"].ravel()]
    test_annos = next((p for p in (base / "cars_test_annos_withlabels.mat", base / "devkit" / "cars_test_annos_withlabels.mat")
                       if p.is_file()), None)
    if test_annos is None:
        raise UserError(f"{base} lacks cars_test_annos_withlabels.mat (the test labels, released separately); put it "
                        f"next to devkit/")

    def folder(name: str) -> Path:
        nested = base / name / name  # some re-uploads nest cars_train/cars_train/
        return nested if nested.is_dir() else base / name

    def items(mat: Path, images: Path) -> Items:
        out = []
        for ann in _loadmat(mat)["annotations"].ravel():
            out.append((images / str(ann["fname"]), int(ann["class"]) - 1))
        return out

    return classes, items(base / "devkit" / "cars_train_annos.mat", folder("cars_train")), items(test_annos, folder("cars_test"))


FLOWERS = Official("flowers102", "Flowers102", "flowers-102", ("imagelabels.mat", "setid.mat"),
                   "flowers-102/{jpg/, imagelabels.mat, setid.mat}", "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/")
PETS = Official("oxford_pets", "Oxford-IIIT Pets", "oxford-iiit-pet", ("annotations/trainval.txt", "annotations/test.txt"),
                "oxford-iiit-pet/{images/, annotations/trainval.txt, annotations/test.txt}",
                "https://www.robots.ox.ac.uk/~vgg/data/pets/")
AIRCRAFT = Official("fgvc_aircraft", "FGVC-Aircraft", "fgvc-aircraft-2013b", ("data/variants.txt", "data/images_variant_test.txt"),
                    "fgvc-aircraft-2013b/data/{images/, variants.txt, images_variant_trainval.txt, images_variant_test.txt}",
                    "https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/")
CARS = Official("stanford_cars", "Stanford Cars", "stanford_cars", ("devkit/cars_meta.mat",),
                "stanford_cars/{devkit/cars_meta.mat, devkit/cars_train_annos.mat, cars_test_annos_withlabels.mat, "
                "cars_train/, cars_test/}", "https://ai.stanford.edu/~jkrause/cars/car_dataset.html")

OFFICIAL: dict[str, Official] = {d.source: d for d in (FLOWERS, PETS, AIRCRAFT, CARS)}
_READERS: dict[str, Callable[[Path], tuple[list[str], Items, Items]]] = {
    "flowers102": _read_flowers, "oxford_pets": _read_pets, "fgvc_aircraft": _read_aircraft, "stanford_cars": _read_cars,
}


def find_official(path: Path, prefer: str | None = None) -> tuple[Official, Path] | None:
    """Which released layout `path` holds (the dataset folder itself, or its parent), and its folder.

    A parent may hold several (data/flowers-102/, data/oxford-iiit-pet/): `prefer` is looked
    for first, and another dataset is only reported when `path` is that dataset's own folder.
    """
    order = sorted(OFFICIAL.values(), key=lambda d: d.source != prefer)
    for dataset in order:
        for base in (path, path / dataset.folder):
            if all((base / m).is_file() for m in dataset.markers):
                if prefer in OFFICIAL and dataset.source != prefer and base != path:
                    continue  # a sibling dataset in the same parent folder
                return dataset, base
    return None


def is_repack(path: Path, cfg: DataConfig) -> bool:
    """A class-folder re-pack of a dataset: split folders (train/ + test/, val/ or valid/) or a name map."""
    from visualrft_lite.data.folder import EVAL_SPLITS, NAME_MAPS

    if cfg.label_names or any((path / name).is_file() for name in NAME_MAPS):
        return True
    return (path / "train").is_dir() and any((path / s).is_dir() for s in EVAL_SPLITS)


def download_root(path: Path, dataset: Official) -> Path:
    """torchvision's `root` for a data.path naming either the dataset folder or its parent."""
    return path.parent if path.name == dataset.folder else path


def download(dataset: Official, path: Path) -> Path:
    """Fetch the release with torchvision's downloader into data.path; returns the dataset folder."""
    root = download_root(path, dataset)
    if dataset.source == "stanford_cars":
        raise UserError(f"Stanford Cars can no longer be downloaded from its original site; get a copy elsewhere and "
                        f"point data.path at the folder holding {dataset.layout}")
    make = downloader(dataset.source)
    print(f"downloading {dataset.title} into {root / dataset.folder} ({dataset.url})")
    try:
        root.mkdir(parents=True, exist_ok=True)
        make(str(root), download=True)
    except Exception as e:  # URLError, checksum RuntimeError, disk full, ...
        raise UserError(f"downloading {dataset.title} into {root} failed ({' '.join(str(e).split())[:160]}); fetch it from "
                        f"{dataset.url} and point data.path at {dataset.layout}") from None
    return root / dataset.folder


def not_found(dataset: Official, path: Path, key: str) -> UserError:
    return UserError(f"{dataset.title} not found at {path} ({key}): expected {dataset.layout} there or below it; "
                     f"set data.download=true to fetch it, or --set {key}=YOUR_COPY")


def load_official(dataset: Official, base: Path, cfg: DataConfig, split: Split, key: str = "data.path") -> LoadResult:
    """Records of one released dataset: k-shot from its training images, or its test list."""
    missing = [m for m in dataset.markers if not (base / m).is_file()]
    if missing:
        raise UserError(f"{base} lacks {missing[0]}; expected {dataset.layout} ({key})")
    classes, train, test = _READERS[dataset.source](base)
    chosen = train if split == "train" else test
    by_class: dict[str, list[Path]] = {name: [] for name in classes}
    for image, label in chosen:
        if not 0 <= label < len(classes):
            raise UserError(f"{dataset.title} at {base}: class id {label + 1} outside 1..{len(classes)}")
        by_class[classes[label]].append(image)
    by_class = {name: files for name, files in by_class.items() if files}
    skipped: Counter[str] = Counter()
    checker = ImageChecker(skipped, key)
    records = class_records(by_class, cfg, split, checker, source=dataset.source, base=base, where=f"{dataset.title} ({base})")
    return LoadResult(records, skipped, checker.entries)
