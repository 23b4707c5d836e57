"""Train / validation / test selection shared by every dataset class."""
SPLITS = ("train", "val", "test")


def resolve_split(train, split):
    """``split`` ("train", "val", "test") wins; otherwise torchprune's ``train`` flag.

    ``train=True`` without a split is torchprune's view: the training data *including* the
    validation part, which its runner carves out itself ("trainval").
    """
    if split is None:
        return "trainval" if train else "test"
    if split not in SPLITS + ("trainval",):
        raise ValueError(f"unknown split '{split}'; choose from {', '.join(SPLITS)}")
    return split


def carve_validation(num_rows, fraction=0.1):
    """(train_rows, val_rows) index ranges: the last ``fraction`` of the rows is validation."""
    num_val = int(round(num_rows * fraction))
    return slice(0, num_rows - num_val), slice(num_rows - num_val, num_rows)
