"""Dataset readers by name: ``DATASETS.get("sysu")(root)``."""

from __future__ import annotations

from vireid.data.datasets.base import Listing, VIReIDDataset
from vireid.data.datasets.folder import FolderDataset
from vireid.data.datasets.llcm import LLCM
from vireid.data.datasets.market import DukeMTMC, Market1501
from vireid.data.datasets.msmt17 import MSMT17
from vireid.data.datasets.regdb import RegDB
from vireid.data.datasets.sysu import SYSUMM01
from vireid.registry import Registry

DATASETS = Registry("dataset")
for _cls in (SYSUMM01, RegDB, LLCM, FolderDataset, Market1501, DukeMTMC, MSMT17):
    DATASETS.register(_cls.name)(_cls)


def open_dataset(name: str, root, **options) -> VIReIDDataset:
    """Read ``root`` as dataset ``name`` (problems are collected, not raised)."""
    return DATASETS.get(name)(root, **options)


__all__ = ["DATASETS", "MSMT17", "DukeMTMC", "FolderDataset", "LLCM", "Listing", "Market1501", "RegDB", "SYSUMM01",
           "VIReIDDataset", "open_dataset"]
