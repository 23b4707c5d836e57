"""The MAF tabular density datasets POWER, GAS, HEPMASS, MINIBOONE and BSDS300.

Files are read from ``root`` in the layout of the MAF archive (``data.tar.gz`` of Zenodo record
1161203, unpacked)::

    power/data.npy   gas/ethylene_CO.pickle   hepmass/1000_train.csv, hepmass/1000_test.csv
    miniboone/data.npy   BSDS300/BSDS300.hdf5

When a dataset's files are missing but ``root/data.tar.gz`` (or ``file_dir/data.tar.gz``) exists,
just that dataset's members are extracted from the archive first (see
:func:`torchprune_flows.data.archive.extract_members`, offline). Fetch the archive with
``python -m torchprune_flows.data.download maf --root ROOT``.

Preprocessing is the standard one of the MAF paper; each dataset has one pure function
``preprocess_<name>`` from the raw arrays / data frames to ``(train, val, test)`` float32 arrays.
The preprocessed splits are cached per (dataset, files, modification times), so building the
train, validation and test sets in one process reads and preprocesses the files once.
``pandas`` (GAS, HEPMASS) and ``h5py`` (BSDS300) are imported only when needed.
"""
import functools
import os

import numpy as np
import torch

from ..registry import register_dataset
from .archive import extract_members, missing_data_message
from .checks import check_rows, check_splits, reading
from .rows import RowDataset
from .splits import resolve_split

#: Name of the MAF archive looked for in ``root`` (and ``file_dir``).
ARCHIVE_NAME = "data.tar.gz"


# --------------------------------------------------------------------------------------------
# Pure preprocessing functions (arrays / frames -> (train, val, test) float32 arrays)
# --------------------------------------------------------------------------------------------
def standard_split(data):
    """MAF's split: test = last ``int(0.1 N)`` rows, val = last ``int(0.1 N_rest)`` of the rest."""
    n = data.shape[0]
    n_rest = n - int(0.1 * n)
    n_train = n_rest - int(0.1 * n_rest)
    return data[:n_train], data[n_train:n_rest], data[n_rest:]


def _standardise_by_trainval(data):
    """Standard split, each split z-scored with the mean / std (ddof=0) of train+val rows."""
    train, val, test = standard_split(data)
    trainval = data[:len(train) + len(val)]  # the train and val rows, in order
    mu, sd = trainval.mean(axis=0), trainval.std(axis=0)
    return tuple(_float32((part - mu) / sd) for part in (train, val, test))


def _float32(array):
    return np.ascontiguousarray(array, dtype=np.float32)


#: POWER's columns after deleting column 3, then column 1.
POWER_COLUMNS = [0, 2, 4, 5, 6, 7]


def preprocess_power(raw):
    """POWER: shuffle (RandomState(42)), drop columns 3 and 1, add noise, split, z-score."""
    rng = np.random.RandomState(42)
    # ``rng.permutation(N)`` makes the same draws as ``rng.shuffle(rows)`` (RandomState's stream is
    # frozen), so taking rows in that order equals shuffling a copy, and leaves ``rng`` in the same
    # state, but is several times faster on millions of rows and reads a memory map only once.
    order = rng.permutation(raw.shape[0])
    data = np.take(raw, order, axis=0)[:, POWER_COLUMNS].astype(np.float64)
    n = data.shape[0]
    voltage = 0.01 * rng.rand(n, 1)  # the draw order reproduces the standard numbers
    gap = 0.001 * rng.rand(n, 1)
    sub_metering = rng.rand(n, 3)
    time = np.zeros((n, 1))
    data += np.hstack((gap, voltage, sub_metering, time))
    return _standardise_by_trainval(data)


def gas_columns_to_keep(corr, threshold=0.98):
    """Indices left after repeatedly dropping the first column correlated > threshold with another.

    ``corr`` is the full correlation matrix; a pair's correlation does not depend on the other
    columns, so recomputing it after each drop would give the same sub-matrix.
    """
    keep = list(range(corr.shape[0]))
    while True:
        counts = (corr[np.ix_(keep, keep)] > threshold).sum(axis=1)
        over = np.flatnonzero(counts > 1)
        if not len(over):
            return keep
        del keep[over[0]]


def preprocess_gas(frame):
    """GAS: drop Meth, Eth, Time and highly correlated columns, z-score all rows, split."""
    frame = frame.drop(columns=["Meth", "Eth", "Time"])
    keep = gas_columns_to_keep(frame.corr().to_numpy())
    frame = frame.iloc[:, keep]
    frame = (frame - frame.mean()) / frame.std()
    return tuple(_float32(part) for part in standard_split(frame.to_numpy(dtype=np.float64)))


def max_value_counts(data):
    """How often each column's most frequent value occurs (one ``np.unique`` per column)."""
    return np.array([np.unique(column, return_counts=True)[1].max() if len(column) else 0
                     for column in np.asarray(data).T], dtype=np.int64)


def _align_hepmass_test(train, test):
    """The test frame with the train frame's columns, and a mask of train columns it lacks.

    Columns are matched by name (as pandas' arithmetic in the MAF code does), absent ones filled
    with NaN; when the names differ but the widths agree, by position.
    """
    if set(test.columns) <= set(train.columns):
        return test.reindex(columns=train.columns), ~train.columns.isin(test.columns)
    if test.shape[1] == train.shape[1]:
        return test.set_axis(train.columns, axis=1), np.zeros(train.shape[1], dtype=bool)
    raise ValueError(f"HEPMASS: the test file has {test.shape[1]} feature columns (after dropping the label "
                     f"and the last column), the train file {train.shape[1]}")


def preprocess_hepmass(train_frame, test_frame, max_repeats=5):
    """HEPMASS: label-1 rows without label (test: also its last column), z-score with train stats,
    drop features whose most frequent value occurs more than ``max_repeats`` times, carve val."""
    def signal(frame):
        label = frame.columns[0]
        return frame[frame[label] == 1].drop(columns=label)

    train, test = signal(train_frame), signal(test_frame)
    test, absent = _align_hepmass_test(train, test.drop(columns=test.columns[-1]))
    mu, sd = train.mean(), train.std()
    columns = train.columns
    train = ((train - mu) / sd).to_numpy(dtype=np.float64)
    test = ((test - mu) / sd).to_numpy(dtype=np.float64)
    keep = max_value_counts(train) <= max_repeats
    if np.any(keep & absent):
        lacking = ", ".join(map(str, columns[keep & absent]))
        raise ValueError(f"HEPMASS: the test file lacks the feature column(s) {lacking}")
    train, test = train[:, keep], test[:, keep]
    n_train = train.shape[0] - int(0.1 * train.shape[0])
    return _float32(train[:n_train]), _float32(train[n_train:]), _float32(test)


def preprocess_miniboone(raw):
    """MINIBOONE: split, z-score with train+val stats."""
    return _standardise_by_trainval(np.asarray(raw, dtype=np.float64))


# --------------------------------------------------------------------------------------------
# Cached file readers
# --------------------------------------------------------------------------------------------
def _stamps(paths):
    stats = [os.stat(path) for path in paths]
    return tuple((st.st_mtime_ns, st.st_size) for st in stats)


#: The fewest rows the standard split turns into non-empty train, validation and test sets.
MIN_ROWS = 11


def _root_of(path):
    """The data root of a file stored as ``root/<dataset folder>/<file>``."""
    return os.path.dirname(os.path.dirname(path))


@functools.lru_cache(maxsize=4)
def _preprocessed(cls, paths, stamps):
    """``cls.read_and_preprocess(paths)`` (read-only float32 arrays), cached per file version;
    unreadable files and unusable contents raise one :class:`DataFileError` line."""
    with reading(" and ".join(paths), cls.name, cls.command, _root_of(paths[0])):
        parts = cls.read_and_preprocess(paths)
    check_splits(parts, paths, cls.name, cls.dim if cls.fixed_width else None)
    for part in parts:
        part.flags.writeable = False
    return parts


@functools.lru_cache(maxsize=4)
def _hdf5_part(path, stamps, name):
    import h5py

    with reading(path, "BSDS300", "maf", _root_of(path)):
        with h5py.File(path, "r") as handle:
            part = _float32(handle[name][()])
    check_rows(part, f"{path} ({name})", "BSDS300", width=Bsds300.dim)
    part.flags.writeable = False
    return part


def clear_cache():
    """Forget every cached preprocessed split."""
    _preprocessed.cache_clear()
    _hdf5_part.cache_clear()


# --------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------
class TabularDataset(RowDataset):
    """Base class of the MAF datasets; yields ``(x, 0)`` with ``x`` a float32 row of length ``dim``.

    The signature is torchprune's (``root``, ``train``, ``download``, ``transform``,
    ``file_dir``) plus ``split`` ("train", "val", "test"; ``train=True`` without a split is
    train+val, "trainval"). ``download`` is accepted for compatibility and ignored: nothing is
    fetched implicitly (run ``python -m torchprune_flows.data.download maf``). ``file_dir`` is an
    extra folder searched for the MAF archive ``data.tar.gz``.

    Subclasses set ``name``, ``dim``, ``files`` (paths relative to ``root``) and
    ``read_and_preprocess(paths) -> (train, val, test)``; ``command`` is the download
    subcommand that fetches them (the MAF archive, for all of them).
    """

    name = ""
    command = "maf"
    dim = 0
    files = ()
    fixed_width = True  # False where preprocessing drops columns depending on the data

    def __init__(self, root="./data/training", train=True, download=False, transform=None, split=None,
                 file_dir=None):
        self.split = resolve_split(train, split)
        self.transform = transform
        self.root = os.path.abspath(os.path.expanduser(str(root)))
        self.paths = self.locate_files(self.root, file_dir)
        array = self.load_split(self.paths, self.split)
        self.data = torch.from_numpy(array if array.flags.writeable else array.copy())  # own, not cached

    @classmethod
    def archive_candidates(cls, root, file_dir=None):
        folders = [root] + ([os.path.abspath(os.path.expanduser(str(file_dir)))] if file_dir else [])
        return list(dict.fromkeys(os.path.join(folder, ARCHIVE_NAME) for folder in folders))

    @classmethod
    def locate_files(cls, root, file_dir=None):
        """Absolute paths of the dataset's files: unpacked in ``root`` or, failing that, in
        ``file_dir`` (torchprune passes its ``directories.training_data`` there), else extracted
        into ``root`` from the MAF archive in either folder."""
        def files_in(folder):
            return tuple(os.path.join(folder, *relative.split("/")) for relative in cls.files)

        paths = files_in(root)
        if file_dir:
            elsewhere = files_in(os.path.abspath(os.path.expanduser(str(file_dir))))
            if not all(os.path.isfile(path) for path in paths) and all(os.path.isfile(p) for p in elsewhere):
                return elsewhere
        missing = [relative for relative, path in zip(cls.files, paths) if not os.path.isfile(path)]
        if missing:
            archives = cls.archive_candidates(root, file_dir)
            archive = next((path for path in archives if os.path.isfile(path)), None)
            if archive is None:
                expected = f"{' and '.join(paths)} or {' or '.join(archives)}"
                raise FileNotFoundError(missing_data_message(cls.name, expected, cls.command, root))
            extract_members(archive, root, missing, what=cls.name, dataset=cls.command)
        return paths

    @classmethod
    def load_split(cls, paths, split):
        """The preprocessed ``split``: a float32 array, read-only when it is the cached one."""
        train, val, test = _preprocessed(cls, tuple(paths), _stamps(paths))
        if split == "trainval":
            return np.concatenate([train, val])
        return {"train": train, "val": val, "test": test}[split]

    @classmethod
    def read_and_preprocess(cls, paths):
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}(split={self.split!r}, rows={len(self)}, dim={self.dim}, root={self.root!r})"


@register_dataset("Power")
class Power(TabularDataset):
    """POWER (``power/data.npy``, 8 columns): rows shuffled with RandomState(42); columns 3 and 1
    deleted; uniform noise added, scaled [0.001, 0.01, 1, 1, 1, 0] per column; standard split;
    z-scored with train+val statistics. D = 6."""

    name, dim, files = "POWER", 6, ("power/data.npy",)

    @classmethod
    def read_and_preprocess(cls, paths):
        return preprocess_power(check_rows(np.load(paths[0], mmap_mode="r"), paths[0], cls.name,
                                           min_rows=MIN_ROWS))


@register_dataset("Gas")
class Gas(TabularDataset):
    """GAS (``gas/ethylene_CO.pickle``, a pandas DataFrame): columns Meth, Eth, Time dropped;
    then, repeatedly, the first column correlated > 0.98 with another; z-scored over all rows
    (ddof=1); standard split. D = 8."""

    name, dim, files = "GAS", 8, ("gas/ethylene_CO.pickle",)
    fixed_width = False

    @classmethod
    def read_and_preprocess(cls, paths):
        import pandas as pd

        return preprocess_gas(pd.read_pickle(paths[0]))


@register_dataset("Hepmass")
class Hepmass(TabularDataset):
    """HEPMASS (``hepmass/1000_train.csv``, ``hepmass/1000_test.csv``, label first): label-1 rows
    only, label dropped (and the test file's extra last column); z-scored with train statistics
    (ddof=1); features whose most frequent value occurs more than 5 times dropped; validation =
    last 10 % of train, test = the test file. D = 21."""

    name, dim, files = "HEPMASS", 21, ("hepmass/1000_train.csv", "hepmass/1000_test.csv")
    fixed_width = False

    @classmethod
    def read_and_preprocess(cls, paths):
        import pandas as pd

        return preprocess_hepmass(*(pd.read_csv(path, index_col=False) for path in paths))


@register_dataset("Miniboone")
class Miniboone(TabularDataset):
    """MINIBOONE (``miniboone/data.npy``, 43 columns): standard split; z-scored with train+val
    statistics. D = 43."""

    name, dim, files = "MINIBOONE", 43, ("miniboone/data.npy",)

    @classmethod
    def read_and_preprocess(cls, paths):
        return preprocess_miniboone(check_rows(np.load(paths[0], mmap_mode="r"), paths[0], cls.name,
                                               width=cls.dim, min_rows=MIN_ROWS))


@register_dataset("Bsds300")
class Bsds300(TabularDataset):
    """BSDS300 (``BSDS300/BSDS300.hdf5``, datasets train / validation / test of 8x8 patches with
    the last pixel dropped): no preprocessing; train+val concatenates train and validation.
    D = 63."""

    name, dim, files = "BSDS300", 63, ("BSDS300/BSDS300.hdf5",)
    PARTS = {"train": ("train",), "val": ("validation",), "test": ("test",),
             "trainval": ("train", "validation")}

    @classmethod
    def load_split(cls, paths, split):
        stamps = _stamps(paths)
        parts = [_hdf5_part(paths[0], stamps, name) for name in cls.PARTS[split]]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


#: The registered tabular dataset classes, in the order of the MAF paper.
TABULAR_DATASETS = (Power, Gas, Hepmass, Miniboone, Bsds300)
