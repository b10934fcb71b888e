"""Dataset loaders (IDX, image folders or tarballs of them, .npz) and preprocessing to a model's input.

`load_dataset` returns float32 NCHW arrays already shaped for the model: scaled to [0, 1], grey <-> RGB
converted, 28x28 zero-padded to 32x32 (other sizes resized), then normalised with the training set's
per-channel mean and standard deviation. What was done is recorded in `Dataset.preprocessing` so the
report can state it (a deployed model must be fed the same way).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import struct
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mirrorc.errors import MirrorcError

FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
# Named datasets: where they live under the data directory.
KNOWN = {
    "mnist": ("mnist",),
    "fashion-mnist": ("fashion-mnist", "fashion_mnist", "fashionmnist"),
    "cifar10": ("cifar10-jpg.tar.gz", "cifar10", "cifar-10"),
}
_IDX_NAMES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
_IMAGE_RE = re.compile(r"(?:^|/)(train|test)/([^/]+)/[^/]+\.(?:jpe?g|png)$", re.IGNORECASE)
_SPLIT_SEED = 0  # fixed: the train order (and so --limit-train subsets) is the same on every run


@dataclass
class Dataset:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    classes: list[str]
    preprocessing: dict = field(default_factory=dict)


def default_data_dir(data_dir: str | None) -> Path | None:
    value = data_dir or os.environ.get("MIRRORC_DATA")
    return Path(value) if value else None


def cache_dir() -> Path:
    return Path(os.environ.get("MIRRORC_CACHE") or Path.home() / ".cache" / "mirrorc")


# (x_train, y_train, x_test, y_test, class names or None when the source names none)
RawData = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str] | None]


def load_dataset(
    name_or_path: str,
    *,
    data_dir: str | None,
    input_shape: tuple[int, ...],
    limit_train: int | None = None,
    num_classes: int | None = None,
    limit_test: int | None = None,
) -> Dataset:
    """Load a dataset by name (mnist, fashion-mnist, cifar10, looked up in `data_dir` or $MIRRORC_DATA)
    or by path, preprocessed to `input_shape` ([N,] C, H, W or [N,] D). `num_classes`, when given, is the
    model's: labels outside it are an error. `limit_test` keeps the first N test images (before they
    are resized: 10000 CIFAR-10 images at 224x224 would take 6 GB)."""
    path = resolve(name_or_path, data_dir)
    raw = load_raw(path)
    x_train, y_train, x_test, y_test, classes = raw
    for split, y in (("train", y_train), ("test", y_test)):
        if len(y) == 0:
            raise MirrorcError(f"{path}: the {split} split is empty")
    order = np.random.default_rng(_SPLIT_SEED).permutation(len(y_train))
    if limit_train is not None:
        if limit_train <= 0:
            raise MirrorcError(f"--limit-train: must be positive, got {limit_train}")
        order = order[:limit_train]
    full_train, x_train, y_train = x_train, x_train[order], y_train[order]
    if limit_test is not None:
        if limit_test <= 0:
            raise MirrorcError(f"--limit-test: must be positive, got {limit_test}")
        x_test, y_test = x_test[:limit_test], y_test[:limit_test]

    k = int(max(y_train.max(), y_test.max())) + 1
    if num_classes is not None:
        if k > num_classes:
            raise MirrorcError(f"{path}: labels go up to {k - 1} but the model has {num_classes} classes")
        k = num_classes
    if y_train.min() < 0 or y_test.min() < 0:
        raise MirrorcError(f"{path}: negative labels")
    if not classes or len(classes) < k:
        classes = (classes or []) + [str(i) for i in range(len(classes or []), k)]

    x_train, x_test, prep = preprocess(x_train, x_test, input_shape, stats_from=full_train)
    prep = {"source": str(path), "train_images": int(len(y_train)), "test_images": int(len(y_test)), **prep}
    return Dataset(x_train, y_train.astype(np.int64), x_test, y_test.astype(np.int64), k, list(classes[:k]), prep)


def resolve(name_or_path: str, data_dir: str | None) -> Path:
    """A dataset name or path -> the file or directory holding it."""
    key = name_or_path.lower()
    if key in KNOWN:
        root = default_data_dir(data_dir)
        if root is None:
            raise MirrorcError(f"--data {name_or_path}: no data directory; pass --data-dir or set MIRRORC_DATA")
        if not root.is_dir():
            raise MirrorcError(f"{root}: data directory does not exist")
        for candidate in KNOWN[key]:
            if (root / candidate).exists():
                return root / candidate
        if key != "cifar10" and _find_idx(root, "x_train") is not None:
            return root  # the user pointed straight at the IDX files
        raise MirrorcError(f"{root}: no {name_or_path} here (looked for {', '.join(KNOWN[key])})")
    path = Path(name_or_path)
    if not path.exists():
        raise MirrorcError(f"{path}: dataset not found (not a file, directory or one of {', '.join(KNOWN)})")
    return path


def load_raw(path: Path) -> RawData:
    """-> (x_train, y_train, x_test, y_test, classes) with images uint8 or float [N, H, W, C]."""
    if path.is_dir():
        if _find_idx(path, "x_train") is not None:
            return _load_idx_dir(path)
        if (path / "train").is_dir() and (path / "test").is_dir():
            return _cached(path, _load_image_folders)
        raise MirrorcError(
            f"{path}: neither IDX files ({_IDX_NAMES['x_train']}[.gz], ...) nor train/ and test/ image folders"
        )
    name = path.name.lower()
    if name.endswith(".npz"):
        return _load_npz(path)
    if name.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")):
        return _cached(path, _load_image_tarball)
    raise MirrorcError(f"{path}: unknown dataset format (want an IDX directory, image folders, a tarball or .npz)")


# --- IDX ---------------------------------------------------------------------------------------------


def _find_idx(directory: Path, key: str) -> Path | None:
    base = _IDX_NAMES[key]
    for candidate in (base + ".gz", base, base.replace("-idx", ".idx") + ".gz", base.replace("-idx", ".idx")):
        if (directory / candidate).exists():
            return directory / candidate
    return None


def read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file (gzipped or plain); any inconsistency is a MirrorcError naming the file."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise MirrorcError(f"{path}: cannot read ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise MirrorcError(f"{path}: not an IDX file (bad magic number)")
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if raw[2] not in dtypes:
        raise MirrorcError(f"{path}: unknown IDX data type 0x{raw[2]:02x}")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise MirrorcError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    dtype = np.dtype(dtypes[raw[2]])
    expected = 4 + 4 * ndim + int(np.prod(dims)) * dtype.itemsize
    if len(raw) != expected:
        raise MirrorcError(f"{path}: IDX size mismatch: header says {dims} ({expected} bytes), file has {len(raw)}")
    return np.frombuffer(raw, dtype, offset=4 + 4 * ndim).reshape(dims).astype(dtype.newbyteorder("="))


def _load_idx_dir(directory: Path):
    arrays = {}
    for key in _IDX_NAMES:
        p = _find_idx(directory, key)
        if p is None:
            raise MirrorcError(f"{directory}: missing {_IDX_NAMES[key]}[.gz]")
        arrays[key] = read_idx(p)
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim not in (3, 4) or y.ndim != 1 or len(x) != len(y):
            raise MirrorcError(f"{directory}: {split} images {x.shape} and labels {y.shape} do not match")
    classes = FASHION_CLASSES if "fashion" in directory.name.lower() else None

    def to_nhwc(a: np.ndarray) -> np.ndarray:
        return a[..., None] if a.ndim == 3 else a

    return (
        to_nhwc(arrays["x_train"]),
        arrays["y_train"].astype(np.int64),
        to_nhwc(arrays["x_test"]),
        arrays["y_test"].astype(np.int64),
        classes,
    )


# --- image folders and tarballs -----------------------------------------------------------------------


def decode_image(data: bytes, where: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            decoded = img.convert("L" if img.mode in ("L", "1", "I;16", "I") else "RGB")
            arr = np.asarray(decoded, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as e:
        raise MirrorcError(f"{where}: cannot decode image ({e})") from None
    return arr[..., None] if arr.ndim == 2 else arr


def _stack(items: dict, where: str):
    """items: split -> list of (class, image) -> arrays, classes sorted by name."""
    classes = sorted({c for split in items.values() for c, _ in split})
    index = {c: i for i, c in enumerate(classes)}
    out = []
    for split in ("train", "test"):
        if not items.get(split):
            raise MirrorcError(f"{where}: no images under {split}/<class>/")
        shapes = {img.shape for _, img in items[split]}
        if len(shapes) != 1:
            raise MirrorcError(f"{where}: {split} images differ in size: {sorted(shapes)[:3]}")
        out += [
            np.stack([img for _, img in items[split]]),
            np.array([index[c] for c, _ in items[split]], dtype=np.int64),
        ]
    return (*out, classes)


def _load_image_folders(directory: Path):
    items: dict[str, list[tuple[str, np.ndarray]]] = {"train": [], "test": []}
    for p in sorted(directory.rglob("*")):
        m = _IMAGE_RE.search(p.relative_to(directory).as_posix())
        if m and p.is_file():
            items[m.group(1)].append((m.group(2), decode_image(p.read_bytes(), str(p))))
    return _stack(items, str(directory))


def _load_image_tarball(path: Path):
    """Decoded straight from the archive: nothing is extracted to disk."""
    items: dict[str, list[tuple[str, np.ndarray]]] = {"train": [], "test": []}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                m = _IMAGE_RE.search(member.name)
                if m and member.isfile():
                    f = tar.extractfile(member)
                    assert f is not None  # a regular file (isfile above) always has one
                    data = f.read()
                    items[m.group(1)].append((m.group(2), decode_image(data, f"{path}:{member.name}")))
    except (tarfile.TarError, EOFError, OSError) as e:
        raise MirrorcError(f"{path}: cannot read tarball ({e})") from None
    # archive order is arbitrary: sort by member path so the arrays are the same on every machine
    return _stack(items, str(path))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.is_file():
                h.update(p.relative_to(path).as_posix().encode())
                h.update(str(p.stat().st_size).encode())
                h.update(str(p.stat().st_mtime_ns).encode())
        return h.hexdigest()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _cached(path: Path, loader):
    """Decoding tens of thousands of JPEGs takes a while: keep the arrays in the cache, keyed by content."""
    key = _sha256(path)
    cached = cache_dir() / f"dataset-{key[:32]}.npz"
    if cached.exists():
        try:
            with np.load(cached, allow_pickle=False) as z:
                return (z["x_train"], z["y_train"], z["x_test"], z["y_test"], [str(c) for c in z["classes"]])
        except (OSError, KeyError, ValueError):
            pass  # a damaged cache entry is rebuilt below
    x_train, y_train, x_test, y_test, classes = loader(path)
    try:
        from mirrorc.outdir import atomic_file

        cached.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(cached) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, classes=np.array(classes))
    except OSError:
        pass  # a read-only cache only costs time
    return x_train, y_train, x_test, y_test, classes


# --- npz ---------------------------------------------------------------------------------------------


def _load_npz(path: Path):
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in z]
            if missing:
                raise MirrorcError(f"{path}: missing array(s) {', '.join(missing)}")
            arrays = [z[k] for k in ("x_train", "y_train", "x_test", "y_test")]
            classes = [str(c) for c in z["classes"]] if "classes" in z else None
    except (OSError, ValueError) as e:
        raise MirrorcError(f"{path}: cannot read npz ({e})") from None
    x_train, y_train, x_test, y_test = arrays
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if y.ndim != 1 or len(x) != len(y):
            raise MirrorcError(f"{path}: x_{split} {x.shape} and y_{split} {y.shape} do not match")
        if not np.issubdtype(y.dtype, np.integer):
            raise MirrorcError(f"{path}: y_{split} must hold integer labels, not {y.dtype}")

    # accept NHWC (channels last, small last dim), NCHW, or NHW; normalise to NHWC here
    def nhwc(x: np.ndarray) -> np.ndarray:
        if x.ndim == 3:
            return x[..., None]
        if x.ndim == 4 and x.shape[1] in (1, 3) and x.shape[3] not in (1, 3):
            return x.transpose(0, 2, 3, 1)
        return x

    return nhwc(x_train), y_train.astype(np.int64), nhwc(x_test), y_test.astype(np.int64), classes


# --- preprocessing -----------------------------------------------------------------------------------


def preprocess(
    x_train: np.ndarray, x_test: np.ndarray, input_shape: Sequence[int], stats_from: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """NHWC images -> float32 arrays of the model's input shape; returns (train, test, what was done).

    The normalisation statistics come from `stats_from` (the full training set, so that a
    --limit-train subset is fed exactly like the full data and evaluate agrees with compile)."""
    shape = [int(d) for d in input_shape]
    if len(shape) in (2, 4):
        shape = shape[1:]  # drop the batch dimension
    steps = []
    if x_train.dtype == np.uint8:
        scale = 255.0
    else:
        scale = 255.0 if float(max(x_train.max(), x_test.max())) > 1.0 else 1.0
    steps.append(f"scaled to [0, 1] (divided by {scale:g})" if scale != 1.0 else "already in [0, 1]")

    if len(shape) == 3:
        want_c, want_h, want_w = shape
    elif len(shape) == 1:
        want_c, want_h, want_w = None, None, None
    else:
        raise MirrorcError(f"model input shape {input_shape}: want [N, C, H, W] or [N, D]")

    def convert(x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float32) / scale
        have_c = x.shape[-1]
        if want_c is not None and have_c != want_c:
            if have_c == 1 and want_c == 3:
                x = np.repeat(x, 3, axis=-1)
            elif have_c == 3 and want_c == 1:
                x = (x @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
            else:
                raise MirrorcError(f"dataset has {have_c} channels, the model wants {want_c}")
        h, w = x.shape[1:3]
        if want_h is not None and want_w is not None and (h, w) != (want_h, want_w):
            dh, dw = want_h - h, want_w - w
            if dh >= 0 and dw >= 0 and dh % 2 == 0 and dw % 2 == 0 and max(dh, dw) <= 8:
                x = np.pad(x, ((0, 0), (dh // 2, dh // 2), (dw // 2, dw // 2), (0, 0)))
            else:
                x = _resize(x, want_h, want_w)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))  # NHWC -> NCHW

    h0, w0, c0 = x_train.shape[1:4]
    x_train, x_test = convert(x_train), convert(x_test)
    c1, h1, w1 = x_train.shape[1:]
    if c1 != c0:
        steps.append(f"{'grey -> RGB (replicated)' if c1 == 3 else 'RGB -> grey (ITU-R 601 luma)'}")
    if (h1, w1) != (h0, w0):
        padded = h1 - h0 <= 8 and w1 - w0 <= 8 and h1 >= h0 and w1 >= w0 and (h1 - h0) % 2 == 0
        steps.append(f"{h0}x{w0} -> {h1}x{w1} ({'zero-padded, centred' if padded else 'bilinear resize'})")
    # per-channel statistics of the whole training set (never the test set), in chunks to bound memory
    source = x_train if stats_from is None else stats_from
    total, total_sq, count = np.zeros(c1), np.zeros(c1), 0
    for start in range(0, len(source), 5000):
        chunk = convert(source[start : start + 5000]).astype(np.float64)
        total += chunk.sum(axis=(0, 2, 3))
        total_sq += (chunk * chunk).sum(axis=(0, 2, 3))
        count += chunk.shape[0] * chunk.shape[2] * chunk.shape[3]
    mean = (total / count).astype(np.float32)
    std = np.sqrt(np.maximum(total_sq / count - (total / count) ** 2, 0)).astype(np.float32)
    std = np.where(std > 0, std, 1.0).astype(np.float32)
    x_train -= mean[None, :, None, None]
    x_train /= std[None, :, None, None]
    x_test -= mean[None, :, None, None]
    x_test /= std[None, :, None, None]
    steps.append("normalised per channel with the training set's mean and std")
    if len(shape) == 1:
        x_train, x_test = x_train.reshape(len(x_train), -1), x_test.reshape(len(x_test), -1)
        if x_train.shape[1] != shape[0]:
            raise MirrorcError(f"dataset images flatten to {x_train.shape[1]} features, the model wants {shape[0]}")
        steps.append("flattened (C, H, W order)")
    prep = {
        "steps": steps,
        "layout": "NCHW" if len(shape) == 3 else "ND",
        "input_shape": list(x_train.shape[1:]),
        "mean": [round(float(m), 6) for m in mean],
        "std": [round(float(s), 6) for s in std],
        "scale": scale,
    }
    return x_train, x_test, prep


def _resize(x: np.ndarray, h: int, w: int) -> np.ndarray:
    from PIL import Image

    out = np.empty((len(x), h, w, x.shape[-1]), np.float32)
    for i, img in enumerate(x):
        for c in range(x.shape[-1]):
            out[i, :, :, c] = np.asarray(
                Image.fromarray(img[..., c], mode="F").resize((w, h), Image.Resampling.BILINEAR)
            )
    return out
