"""Offline, atomic extraction of dataset files from archives already on disk; the download hint.

Nothing here touches the network. The dataset readers (:mod:`.tabular`, :mod:`.images`) use it
to unpack just the files they need from an archive next to the data (the MAF ``data.tar.gz``,
CIFAR-10's ``cifar-10-python.tar.gz``, MNIST's ``.gz`` files), and :mod:`.download` uses it to
unpack what it fetched. Every file is written to a temporary file in its destination folder
and moved into place with :func:`os.replace` only when complete, so a failure leaves nothing
half-written behind.

:func:`download_hint` is the one place that says how to fetch a dataset kind (``maf`` for the
tabular datasets, ``mnist``, ``cifar10``); every "data not found" message ends with it.
"""
import gzip
import os
import shutil
import tarfile
import tempfile
import zlib

#: The download command line; ``dataset`` is the subcommand of :mod:`.download` (``maf``,
#: ``mnist``, ``cifar10``), the ``command`` attribute of each dataset class.
DOWNLOAD_COMMAND = "python -m torchprune_flows.data.download {dataset} --root {root}"
CHUNK = 1 << 20


def download_hint(dataset, root):
    """The command that fetches the dataset kind ``dataset`` into ``root``."""
    return DOWNLOAD_COMMAND.format(dataset=dataset, root=root)


def missing_data_message(name, expected, dataset, root):
    """One line: which files of ``name`` were expected, and how to get them."""
    return (f"{name} data not found: expected {expected}; run '{download_hint(dataset, root)}'"
            " or set directories.training_data")


# --------------------------------------------------------------------------------------------
# Files and folders
# --------------------------------------------------------------------------------------------
def make_folders(folder, created):
    """``os.makedirs(folder)``, recording (outermost first) the folders that did not exist."""
    missing = []
    while folder and not os.path.isdir(folder):
        missing.append(folder)
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    for path in reversed(missing):
        os.makedirs(path, exist_ok=True)
        created.append(path)


def remove_folders(created):
    """Remove the (empty) folders recorded by :func:`make_folders`, innermost first."""
    for folder in reversed(created):
        try:
            os.rmdir(folder)
        except OSError:
            pass


def remove_file(path):
    """``os.remove(path)``; a file that is already gone is fine."""
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def copy_to_temp(source, destination):
    """Copy the file object ``source`` into a new temporary file next to ``destination``; its path."""
    folder, base = os.path.split(destination)
    handle, temp = tempfile.mkstemp(dir=folder, prefix=f".{base}.", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as out:
            shutil.copyfileobj(source, out, CHUNK)
    except BaseException:
        remove_file(temp)
        raise
    return temp


# --------------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------------
def gunzip_next_to(archive, destination):
    """Decompress ``archive`` to ``destination`` atomically (temp file in its folder, then rename)."""
    try:
        with gzip.open(archive, "rb") as source:
            temp = copy_to_temp(source, destination)
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise OSError(f"cannot decompress {archive}: {err}") from err
    os.replace(temp, destination)
    return destination


def member_matches(name, relative):
    """``name`` is ``relative`` or ends with ``/relative`` (e.g. the archive's ``data/`` prefix)."""
    name = name.replace("\\", "/")
    while name.startswith("./"):
        name = name[2:]
    name = name.lstrip("/")
    return name == relative or name.endswith("/" + relative)


def extract_members(archive, root, relatives, what="MAF", dataset="maf"):
    """Extract the archive members matching ``relatives`` to ``root/<relative>``; their paths.

    A member matches when its name is the relative path (``miniboone/data.npy``) with or without
    leading folders (the MAF archive has ``data/miniboone/data.npy``). The archive is read in
    one pass; each member goes to a temporary file in its destination folder and all are moved
    into place with :func:`os.replace` only once every one was found. On any failure (missing
    member, unreadable archive, interruption) the temporary files and the folders this call
    created are removed again. ``what`` names the data in messages and ``dataset`` is the kind
    whose download command (:func:`download_hint`) a missing member's message suggests.
    """
    root = os.path.abspath(root)
    wanted = list(dict.fromkeys(relatives))
    destinations = {relative: os.path.join(root, *relative.split("/")) for relative in wanted}
    temps, created, done = {}, [], False
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                for member in tar:
                    if len(temps) == len(wanted):
                        break
                    if not member.isfile():
                        continue
                    relative = next((r for r in wanted if r not in temps and member_matches(member.name, r)),
                                    None)
                    if relative is None:
                        continue
                    make_folders(os.path.dirname(destinations[relative]), created)
                    with tar.extractfile(member) as source:
                        temps[relative] = copy_to_temp(source, destinations[relative])
        except (tarfile.TarError, EOFError, zlib.error) as err:
            raise OSError(f"cannot read the archive {archive}: {err}") from err
        missing = [relative for relative in wanted if relative not in temps]
        if missing:
            raise FileNotFoundError(
                f"{what} data not found: the archive {archive} has no member {' or '.join(missing)}; "
                f"download it again with '{download_hint(dataset, root)}'")
        for relative in wanted:
            os.replace(temps.pop(relative), destinations[relative])
        done = True
    finally:
        if not done:
            for temp in temps.values():
                remove_file(temp)
            remove_folders(created)
    return [destinations[relative] for relative in wanted]
