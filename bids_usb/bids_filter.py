"""``--bids-filter-file``: fMRIPrep's JSON of pybids queries, read and turned into ``get()`` keywords.

One object per query: ``"t1w"``, ``"flair"``, and ``"lesion"`` for the lesion masks, each a
dict of BIDS entities (short keys such as ``acq`` or ``ses`` accepted). ``null`` means "entity
absent", ``"*"`` "entity present, any value". Every problem is a :class:`UsageError` naming
the file and the entry.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .errors import UsageError

__all__ = ["FILTER_KEYS", "LESION_FILTER_KEY", "load_bids_filter", "normalise_filter", "pybids_query"]

# Which entry of a --bids-filter-file applies to which query.
FILTER_KEYS = {"T1w": "t1w", "FLAIR": "flair"}
LESION_FILTER_KEY = "lesion"

# Short BIDS keys (as they appear in file names) -> pybids entity names.
_ENTITY_ALIASES = {
    "sub": "subject",
    "ses": "session",
    "acq": "acquisition",
    "ce": "ceagent",
    "rec": "reconstruction",
    "dir": "direction",
    "mod": "modality",
    "trc": "tracer",
}
# Entities a filter may not change: the command line owns them.
_FORBIDDEN_FILTER_ENTITIES = {
    "subject": "use --participant-label",
    "suffix": "the contrast sets the suffix",
    "datatype": "only anat/ images are used",
}


def _check_filter_value(value: Any) -> bool:
    scalar = (str, int, bool, type(None))
    if isinstance(value, scalar):
        return True
    return isinstance(value, list) and all(isinstance(v, scalar) and v is not None for v in value)


def normalise_filter(filters: Mapping, origin: str) -> dict[str, dict[str, Any]]:
    if not isinstance(filters, Mapping):
        raise UsageError(
            f"{origin}: a BIDS filter must be a JSON object such as "
            '{"t1w": {"acquisition": "mprage"}}, '
            f"not a {type(filters).__name__}"
        )
    out: dict[str, dict[str, Any]] = {}
    for key, query in filters.items():
        if not isinstance(query, Mapping):
            raise UsageError(
                f"{origin}: the entry {key!r} must be an object of BIDS entities "
                f'(e.g. {{"acquisition": "mprage"}}), not {json.dumps(query)}'
            )
        clean: dict[str, Any] = {}
        for entity, value in query.items():
            name = _ENTITY_ALIASES.get(entity, entity)
            if not _check_filter_value(value):
                raise UsageError(
                    f"{origin}: {key}.{entity} must be a string, a number, null or a list of "
                    f"strings/numbers, not {json.dumps(value)}"
                )
            clean[name] = value
        out[str(key).lower()] = clean
    return out


def load_bids_filter(path: str | os.PathLike | None) -> dict[str, dict[str, Any]] | None:
    """Read a ``--bids-filter-file`` (fMRIPrep's format); ``None`` gives ``None``.

    The file holds one object per query (``"t1w"``, ``"flair"``, and ``"lesion"`` for the
    lesion masks), each a dict of pybids entities; ``null`` means "entity absent" and ``"*"``
    means "entity present, any value". Short keys (``acq``, ``ses``, ``rec``, ``ce``) are
    accepted. Any problem is a :class:`UsageError` naming the file.
    """
    if path is None:
        return None
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--bids-filter-file {path} cannot be read: {exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"--bids-filter-file {path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from exc
    return normalise_filter(data, f"--bids-filter-file {path}")


def pybids_query(entities: Mapping[str, Any], known: Iterable[str], what: str) -> dict[str, Any]:
    """Turn a filter entry into pybids ``get()`` keywords, checking the entity names."""
    from bids.layout import Query

    known = set(known)
    query: dict[str, Any] = {}
    for name, value in entities.items():
        if name in _FORBIDDEN_FILTER_ENTITIES:
            raise UsageError(
                f"bids filter {what!r}: the entity {name!r} cannot be filtered on ({_FORBIDDEN_FILTER_ENTITIES[name]})"
            )
        if name not in known:
            raise UsageError(
                f"bids filter {what!r}: {name!r} is not a BIDS entity pybids knows (known: {', '.join(sorted(known))})"
            )
        if value is None or value == "<NONE>":
            query[name] = Query.NONE
        elif value in ("*", "<ANY>"):
            query[name] = Query.ANY
        elif value == "<OPTIONAL>":
            query[name] = Query.OPTIONAL
        else:
            query[name] = value
    return query
