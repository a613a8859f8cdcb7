"""The one conversion of hflpipe values to what ``json.dumps`` writes as valid JSON."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import PurePath

import numpy as np


def to_jsonable(value: object) -> object:
    """``value`` with every part turned into a JSON type (dict, list, str, number, bool, None).

    - mappings become dicts (keys kept as they are), lists and tuples become lists;
    - numpy arrays become nested lists, numpy scalars Python numbers and bools;
    - NaN and infinities become None: JSON has no such numbers and ``json.dumps`` would
      write ``NaN``, which strict readers refuse; a missing value reads as null;
    - in a float array of two or more dimensions, a row that is all NaN becomes one None
      (an object frame without a pose is ``null``, not a list of nulls);
    - paths become strings, dates and datetimes ISO 8601 text;
    - str, int, bool and None stay; anything else raises TypeError, as ``json.dumps``
      would, but naming the type here rather than deep inside the encoder.
    """
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer | np.bool_):
        return value.item()
    if isinstance(value, np.ndarray):
        if value.ndim >= 2 and np.issubdtype(value.dtype, np.floating):
            return [None if np.isnan(row).all() else to_jsonable(row) for row in value]
        return to_jsonable(value.tolist())
    if isinstance(value, Mapping):
        return {key: to_jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(item) for item in value]
    if isinstance(value, PurePath):
        return str(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
