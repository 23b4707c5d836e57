"""Download datasets into the training-data folder.

    python -m torchprune_flows.data.download maf --root DIR [--url URL] [--md5 MD5] [--keep-archive]

``maf`` fetches the MAF archive ``data.tar.gz`` (Zenodo record 1161203) into ``DIR``, checks its
MD5 (``--md5``, or the checksum Zenodo lists in the record's metadata), and unpacks the files of
the tabular datasets POWER, GAS, HEPMASS, MINIBOONE and BSDS300 into ``DIR`` in the layout
:mod:`torchprune_flows.data.tabular` reads. Every file is written to a temporary file in its
folder and moved into place only when complete, so an interrupted or failed run leaves nothing
half-written behind.

    python -m torchprune_flows.data.download mnist --root DIR
    python -m torchprune_flows.data.download cifar10 --root DIR

``mnist`` and ``cifar10`` run torchvision's own downloaders (which verify the files' MD5s) and
leave ``DIR/MNIST/raw/`` and ``DIR/cifar-10-batches-py/`` in the layouts
:mod:`torchprune_flows.data.images` reads.

This module is the only one that uses the network; unpacking archives already on disk lives in
:mod:`torchprune_flows.data.archive`, which the dataset readers use without importing this one.
"""
import argparse
import hashlib
import json
import os
import sys
import tempfile
import urllib.error
import urllib.request

from ..errors import UserError
from .archive import CHUNK, extract_members, make_folders, remove_file, remove_folders
from .tabular import ARCHIVE_NAME, TABULAR_DATASETS

MAF_RECORD = "1161203"
MAF_URL = f"https://zenodo.org/records/{MAF_RECORD}/files/{ARCHIVE_NAME}"
MAF_METADATA_URL = f"https://zenodo.org/api/records/{MAF_RECORD}"
USER_AGENT = "torchprune-flows"


class DownloadError(UserError, RuntimeError):
    """A download, its metadata or its checksum failed; nothing partial was kept."""


def maf_files():
    """Relative paths of every tabular dataset's files inside the unpacked MAF archive."""
    return [relative for cls in TABULAR_DATASETS for relative in cls.files]


# --------------------------------------------------------------------------------------------
# Downloading
# --------------------------------------------------------------------------------------------
def _open(url, timeout):
    return urllib.request.urlopen(urllib.request.Request(url, headers={"User-Agent": USER_AGENT}),
                                  timeout=timeout)


def fetch_md5(metadata_url=MAF_METADATA_URL, key=ARCHIVE_NAME, timeout=60):
    """The MD5 (hex) a Zenodo record's metadata lists for the file ``key``."""
    try:
        with _open(metadata_url, timeout) as response:
            metadata = json.load(response)
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise DownloadError(f"cannot read the checksum from {metadata_url}: {err}; pass --md5 to skip it") from err
    files = metadata.get("files") if isinstance(metadata, dict) else None
    if isinstance(files, dict):  # InvenioRDM style: {"entries": {...} or [...]}
        files = files.get("entries", {})
        files = list(files.values()) if isinstance(files, dict) else files
    for entry in files or []:
        if isinstance(entry, dict) and entry.get("key") == key:
            algorithm, _, digest = str(entry.get("checksum", "")).partition(":")
            if algorithm.lower() == "md5" and _is_md5(digest):
                return digest.lower()
    raise DownloadError(f"{metadata_url} lists no md5 checksum for {key}; pass --md5 to skip it")


def _is_md5(text):
    return len(text) == 32 and all(c in "0123456789abcdefABCDEF" for c in text)


def file_md5(path):
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_file(url, destination, md5, progress=True, timeout=60):
    """Download ``url`` to ``destination`` (temp file, MD5 check, then ``os.replace``)."""
    from tqdm import tqdm

    folder, base = os.path.split(os.path.abspath(destination))
    handle, temp = tempfile.mkstemp(dir=folder, prefix=f".{base}.", suffix=".part")
    try:
        digest = hashlib.md5()
        with os.fdopen(handle, "wb") as out:
            with _open(url, timeout) as response:
                size = response.headers.get("Content-Length")
                with tqdm(total=int(size) if size and size.isdigit() else None, unit="B", unit_scale=True,
                          unit_divisor=1024, desc=base, disable=not progress, file=sys.stderr) as bar:
                    for chunk in iter(lambda: response.read(CHUNK), b""):
                        out.write(chunk)
                        digest.update(chunk)
                        bar.update(len(chunk))
        if digest.hexdigest() != md5.lower():
            raise DownloadError(f"md5 mismatch for {url}: expected {md5.lower()}, got {digest.hexdigest()}; "
                                "the download was deleted")
        os.replace(temp, destination)
    except (urllib.error.URLError, OSError) as err:
        remove_file(temp)
        raise DownloadError(f"download of {url} failed: {err}; nothing was kept") from err
    except BaseException:
        remove_file(temp)
        raise


def download_maf(root, url=MAF_URL, md5=None, metadata_url=MAF_METADATA_URL, keep_archive=False,
                 progress=True, timeout=60):
    """Download and verify the MAF archive into ``root``, unpack the tabular datasets' files.

    ``md5`` defaults to the checksum in the Zenodo metadata at ``metadata_url``. An archive
    already at ``root/data.tar.gz`` with the right MD5 is reused. The archive is deleted after
    extraction unless ``keep_archive``. Returns the extracted files' paths. Raises
    :class:`DownloadError` (nothing kept; a ``root`` folder this call created is removed) or
    ``OSError`` when extraction fails (the verified archive is kept).
    """
    root = os.path.abspath(os.path.expanduser(str(root)))
    if md5 is None:
        md5 = fetch_md5(metadata_url, timeout=timeout)
    if not _is_md5(md5):
        raise DownloadError(f"'{md5}' is not an md5 checksum (32 hex digits)")
    created = []
    make_folders(root, created)
    archive = os.path.join(root, ARCHIVE_NAME)
    try:
        if not (os.path.isfile(archive) and file_md5(archive) == md5.lower()):
            download_file(url, archive, md5, progress=progress, timeout=timeout)
    except BaseException:
        remove_folders(created)
        raise
    paths = extract_members(archive, root, maf_files(), what="MAF", dataset="maf")
    if not keep_archive:
        os.remove(archive)
    return paths


def _files_under(paths):
    """Every file at or below ``paths`` (absolute paths)."""
    found = set()
    for path in paths:
        if os.path.isfile(path):
            found.add(path)
        for folder, _, names in os.walk(path):
            found.update(os.path.join(folder, name) for name in names)
    return found


def download_torchvision(name, root, outputs, splits=(True,)):
    """``torchvision.datasets.<name>(root, train=..., download=True)`` for each flag in ``splits``.

    torchvision checks the MD5s. On failure the files and folders that appeared at ``outputs``
    (paths relative to ``root``) and a ``root`` created by this call are removed again, and
    torchvision's errors (``RuntimeError``, network errors) are raised as :class:`DownloadError`.
    Returns the absolute ``root``.
    """
    import torchvision.datasets

    root = os.path.abspath(os.path.expanduser(str(root)))
    cls = getattr(torchvision.datasets, name)
    watched = [os.path.join(root, *relative.split("/")) for relative in outputs]
    folders = [path for relative in outputs for path in _parents(root, relative)]
    before, existed, created = _files_under(watched), {path for path in folders if os.path.isdir(path)}, []
    make_folders(root, created)
    try:
        for train in splits:
            cls(root, train=train, download=True)
    except BaseException as err:
        for path in sorted(_files_under(watched) - before):
            remove_file(path)
        for folder in sorted(set(folders) - existed, key=len, reverse=True) + list(reversed(created)):
            if os.path.isdir(folder):
                try:
                    os.rmdir(folder)  # only when empty
                except OSError:
                    pass
        if isinstance(err, (RuntimeError, OSError)):
            raise DownloadError(f"download of {name} into {root} failed: {err}; nothing new was kept") from err
        raise
    return root


def _parents(root, relative):
    """``root/a``, ``root/a/b``, ... up to ``root/relative`` itself."""
    parts = relative.split("/")
    return [os.path.join(root, *parts[:i]) for i in range(1, len(parts) + 1)]


def download_mnist(root):
    """MNIST's training and test files into ``root/MNIST/raw`` (torchvision's downloader)."""
    return download_torchvision("MNIST", root, ["MNIST/raw"], splits=(True, False))


def download_cifar10(root):
    """CIFAR-10's batches into ``root/cifar-10-batches-py`` (torchvision's downloader)."""
    return download_torchvision("CIFAR10", root, ["cifar-10-python.tar.gz", "cifar-10-batches-py"])


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------
def _run_maf(args):
    paths = download_maf(args.root, url=args.url, md5=args.md5, metadata_url=args.metadata_url,
                         keep_archive=args.keep_archive)
    print(f"extracted {len(paths)} files of POWER, GAS, HEPMASS, MINIBOONE and BSDS300 into "
          f"{os.path.abspath(args.root)}")
    return 0


def _run_images(args):
    download, folder = {"mnist": (download_mnist, os.path.join("MNIST", "raw")),
                        "cifar10": (download_cifar10, "cifar-10-batches-py")}[args.dataset]
    root = download(args.root)
    print(f"{args.dataset} is in {os.path.join(root, folder)}")
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m torchprune_flows.data.download",
                                     description="Download datasets into the training-data folder.")
    commands = parser.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    maf = commands.add_parser(
        "maf", help="the MAF tabular datasets (Zenodo record 1161203)",
        description="Download the MAF archive, verify its MD5 and unpack POWER, GAS, HEPMASS, "
                    "MINIBOONE and BSDS300.")
    maf.add_argument("--root", default="./data/training",
                     help="training-data folder (directories.training_data); default: %(default)s")
    maf.add_argument("--url", default=MAF_URL, help="archive URL; default: %(default)s")
    maf.add_argument("--md5", default=None, help="expected MD5; default: the one in the Zenodo metadata")
    maf.add_argument("--metadata-url", default=MAF_METADATA_URL, help="Zenodo metadata URL; default: %(default)s")
    maf.add_argument("--keep-archive", action="store_true", help="keep data.tar.gz after unpacking")
    maf.set_defaults(run=_run_maf)
    for name, what in (("mnist", "MNIST (training and test files)"), ("cifar10", "CIFAR-10 (python batches)")):
        images = commands.add_parser(name, help=f"{what}, through torchvision's downloader",
                                     description=f"Download {what} with torchvision, which checks the MD5s.")
        images.add_argument("--root", default="./data/training",
                            help="training-data folder (directories.training_data); default: %(default)s")
        images.set_defaults(run=_run_images)
    return parser


def main(argv=None):
    """The command line; returns the exit code (errors: one ``error: ...`` line, code 1)."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (DownloadError, OSError, ValueError) as err:
        print("error: " + " ".join(str(err).split("\n")), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted; nothing partial was kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
