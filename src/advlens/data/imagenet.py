"""The 1,000 ImageNet-1k classes (ILSVRC-2012): names and WordNet ids in the order pretrained models use.

The table ships with the package (``imagenet_classes.json``; nothing is downloaded). Two names repeat
in the usual index (134/517 "crane", 638/639 "maillot"); here 134 is "crane (bird)" and 639
"maillot (tank suit)", so that every name picks one class.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

from advlens.errors import DatasetError


@lru_cache(maxsize=1)
def _table() -> tuple[tuple[str, ...], tuple[str, ...]]:
    text = (resources.files("advlens") / "data" / "imagenet_classes.json").read_text(encoding="utf-8")
    rows = json.loads(text)["classes"]
    return tuple(row[0] for row in rows), tuple(row[1] for row in rows)


def imagenet_wnids() -> tuple[str, ...]:
    """The 1,000 WordNet ids (``n01440764`` …) by class index."""
    return _table()[0]


def imagenet_classes() -> tuple[str, ...]:
    """The 1,000 class names ("tench", "goldfish", …) by class index."""
    return _table()[1]


def imagenet_class(name_or_wnid: str) -> int:
    """The class index of an ImageNet WordNet id or class name (case, ``_`` and spaces do not matter).

    Raises:
        DatasetError: no ImageNet class has that id or name.
    """
    wnids, names = _table()
    key = name_or_wnid.strip()
    if key in wnids:
        return wnids.index(key)
    folded = key.lower().replace("_", " ")
    for index, name in enumerate(names):
        if name.lower() == folded:
            return index
    raise DatasetError(f"{name_or_wnid!r} is not an ImageNet class: name a folder by its WordNet id (e.g. "
                       f"n02123159) or its class name (e.g. 'tiger cat')")


__all__ = ["imagenet_classes", "imagenet_wnids", "imagenet_class"]
