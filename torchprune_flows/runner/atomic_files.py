"""Atomic files: checkpoints that load with ``torch.load(weights_only=True)``, JSON records.

Files are written to a temporary file and renamed, with the usual permissions (0666 less the
umask, as ``open`` gives). A file that cannot be read back (truncated by a full disk, edited by
hand) raises :class:`CorruptFileError`, one line that names it and the fix.
"""
import io
import json
import os
import tempfile

import torch

from torchprune_flows.errors import UserError


class CorruptFileError(UserError, ValueError):
    """A run-folder file that cannot be read; the message names it and how to recover."""

    def __init__(self, path, err):
        text = str(err).strip().splitlines()
        reason = f"{type(err).__name__}: {text[-1]}" if text else type(err).__name__
        super().__init__(f"{path} is corrupt or truncated ({reason}); delete it and rerun the same command: "
                         "only what it held is recomputed")


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path, write):
    """Write ``path`` through ``write(handle)``, atomically. The content is serialised in memory
    first, so a full disk or a file-size limit is always an OSError naming ``path`` (torch.save
    and PIL report it in ways of their own), and the previous file (or none) stays in place."""
    buffer = io.BytesIO()
    write(buffer)
    tmp = None
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".tmp-")
        with os.fdopen(fd, "wb") as handle:
            handle.write(buffer.getbuffer())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a finished file gets the usual mode
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(err, OSError) and err.errno is not None:
            raise OSError(err.errno, err.strerror, path) from err
        raise


def save_checkpoint(obj, path):
    """Write tensors, numbers, strings, lists and dicts so that a crash never leaves half a file."""
    atomic_write(path, lambda handle: torch.save(obj, handle))


def load_checkpoint(path, map_location="cpu"):
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # noqa: BLE001  (torch raises many kinds for a damaged file)
        raise CorruptFileError(path, err) from err


def save_json(obj, path):
    atomic_write(path, lambda handle: handle.write(json.dumps(obj, indent=1, sort_keys=True).encode()))


def load_json(path):
    try:
        with open(path) as handle:
            return json.load(handle)
    except (ValueError, UnicodeDecodeError) as err:
        raise CorruptFileError(path, err) from err


def save_text(text, path):
    atomic_write(path, lambda handle: handle.write(text.encode()))
