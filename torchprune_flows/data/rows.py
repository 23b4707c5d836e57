"""Datasets held as one tensor of rows: ``(x, y)`` items with the transform applied to x."""
from torch.utils.data import Dataset


class RowDataset(Dataset):
    """Subclasses set ``self.data`` (rows), ``self.transform`` and optionally ``self.targets``
    (per-row labels; without them every target is 0, as for density data)."""

    data = None
    targets = None
    transform = None

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        x = self.data[index]
        if self.transform is not None:
            x = self.transform(x)
        return x, (0 if self.targets is None else self.targets[index])
