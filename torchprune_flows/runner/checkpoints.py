"""Atomic files: checkpoints that load with ``torch.load(weights_only=True)``, JSON records."""
import json
import os
import tempfile

import torch


def atomic_write(path, write):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_checkpoint(obj, path):
    """Write tensors, numbers, strings, lists and dicts so that a crash never leaves half a file."""
    atomic_write(path, lambda handle: torch.save(obj, handle))


def load_checkpoint(path, map_location="cpu"):
    return torch.load(path, map_location=map_location, weights_only=True)


def save_json(obj, path):
    atomic_write(path, lambda handle: handle.write(json.dumps(obj, indent=1, sort_keys=True).encode()))


def load_json(path):
    with open(path) as handle:
        return json.load(handle)


def save_text(text, path):
    atomic_write(path, lambda handle: handle.write(text.encode()))
