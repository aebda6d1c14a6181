"""Find the anatomical images to heal, and their lesion masks, in a BIDS dataset.

The raw dataset is indexed with pybids (``validate=False`` so that the ``_roi`` files of the
fMRIPrep lesion convention are kept, and ``config=['bids', 'derivatives']`` so that ``label``,
``desc`` and ``space`` are parsed).  Lesion masks are accepted in the forms in use:

* ``raw-roi``: fMRIPrep's ``sub-<l>[_ses-<s>][_run-<r>]_label-lesion_roi.nii.gz`` in the raw dataset;
* ``raw-atlas``: ATLAS R2.0's ``..._label-L_desc-T1lesion_mask.nii.gz`` next to the T1w (any
  ``_mask`` in the raw ``anat/`` folder whose desc or label says lesion, or whose sidecar has
  ``"Type": "Lesion"``);
* ``derivatives``: a BIDS-Derivatives dataset (``lesion_masks_dir`` first, then the datasets in
  ``derivatives``) holding ``..._label-<x>_mask.nii.gz`` with a sidecar ``"Type": "Lesion"``, or
  a ``_mask``/``_roi`` whose label or desc says lesion.

A mask belongs to an image when subject and session are equal and every one of run,
acquisition and space that the mask names is equal to the image's (a mask without a run serves
every run).  A mask from ``lesion_masks_dir`` wins over one from ``derivatives``, which wins over
a raw ``_roi``, which wins over a raw ``_mask``; within one source the mask naming more of the
image's entities wins; a tie is an error (:class:`~bids_usb.errors.DataError`) rather than a guess.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import CannotCreateOutput, DataError, NoInput, NothingSelected, UsageError, ValidationFailed

__all__ = [
    "AnatInput",
    "CollectResult",
    "check_output_dataset",
    "check_output_dir",
    "create_dir",
    "check_work_dir",
    "collect_inputs",
    "dataset_check",
    "load_bids_filter",
]

NIFTI_EXTENSIONS = (".nii", ".nii.gz")
CONTRASTS = ("T1w", "FLAIR")
MASK_SOURCES = ("raw-roi", "raw-atlas", "derivatives")

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
# Entities whose presence marks a derived (not raw) image.
_DERIVED_IMAGE_ENTITIES = ("desc", "label")
# Entities a mask may name; when it does, the image must have the same value.
_MATCH_ENTITIES = ("run", "acquisition")
# Spaces of a mask that still lie on a raw image (which has no space entity).
_NATIVE_SPACES = ("T1w",)
_SOURCE_RANK = {"lesion_masks_dir": 4, "derivatives": 3, "raw-roi": 2, "raw-atlas": 1}


@dataclass
class AnatInput:
    """One anatomical image to process, with its lesion mask when one was found."""

    subject: str
    session: str | None
    run: str | None
    suffix: str
    path: Path
    entities: dict = field(default_factory=dict)
    lesion_mask: Path | None = None
    mask_source: str | None = None

    @property
    def acquisition(self) -> str | None:
        return self.entities.get("acquisition")

    @property
    def source_stem(self) -> str:
        """The image's file name without suffix and extension, e.g. ``sub-01_ses-a_run-1``."""
        name = self.path.name
        for ext in (".nii.gz", ".nii"):
            if name.endswith(ext):
                name = name[: -len(ext)]
                break
        return name[: -(len(self.suffix) + 1)] if name.endswith("_" + self.suffix) else name

    @property
    def key(self) -> str:
        """A short readable identity, e.g. ``sub-01 ses-a run-1``."""
        parts = [f"sub-{self.subject}"]
        if self.session:
            parts.append(f"ses-{self.session}")
        if self.acquisition:
            parts.append(f"acq-{self.acquisition}")
        if self.run:
            parts.append(f"run-{self.run}")
        return " ".join(parts)


@dataclass
class CollectResult:
    """What :func:`collect_inputs` found.

    ``missing`` lists the selected participant labels (without ``sub-``) that have no image of
    the contrast (after session and filter selection); ``unknown`` is the subset of those that
    do not appear in the dataset at all.
    """

    inputs: list[AnatInput] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)

    @property
    def subjects(self) -> list[str]:
        return sorted({i.subject for i in self.inputs})

    @property
    def without_mask(self) -> list[AnatInput]:
        return [i for i in self.inputs if i.lesion_mask is None]


# --------------------------------------------------------------------------------------------
# Directory checks
# --------------------------------------------------------------------------------------------


def _resolved(path: str | os.PathLike) -> Path:
    return Path(path).expanduser().resolve()


def check_output_dir(bids_dir: str | os.PathLike, output_dir: str | os.PathLike) -> Path:
    """Refuse an output directory that would write into the raw dataset.

    Allowed: anywhere outside ``bids_dir``, or strictly below ``bids_dir/derivatives/``.
    Returns the resolved output directory.
    """
    bids = _resolved(bids_dir)
    out = _resolved(output_dir)
    if out == bids:
        raise UsageError(
            f"output_dir {output_dir} is the BIDS dataset itself ({bids}); "
            f"give a separate folder, e.g. {bids / 'derivatives' / 'bids_usb'}"
        )
    if out.is_relative_to(bids):
        derivs = bids / "derivatives"
        if out == derivs or not out.is_relative_to(derivs):
            raise UsageError(
                f"output_dir {output_dir} ({out}) lies inside the BIDS dataset {bids}; "
                f"outputs may only go below {derivs}/ (e.g. {derivs / 'bids_usb'}) "
                "or outside the dataset"
            )
    return out


def check_work_dir(bids_dir: str | os.PathLike, work_dir: str | os.PathLike) -> Path:
    """Refuse a working directory inside (or equal to) the BIDS dataset; returns it resolved."""
    bids = _resolved(bids_dir)
    work = _resolved(work_dir)
    if work == bids or work.is_relative_to(bids):
        raise UsageError(
            f"work_dir {work_dir} ({work}) lies inside the BIDS dataset {bids}; "
            "give a working directory outside it (e.g. -w /tmp/bids_usb_work)"
        )
    return work


def check_output_dataset(output_dir: str | os.PathLike) -> None:
    """Refuse an output directory that holds another tool's dataset, or a description nobody can read.

    bids_usb adds files to its own derivatives (other participants, other runs); writing into a
    dataset that another pipeline generated would overwrite that pipeline's masks and images.
    """
    desc = Path(output_dir) / "dataset_description.json"
    if not desc.exists():
        return
    try:
        content = json.loads(desc.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(
            f"{desc} cannot be read as JSON ({exc.__class__.__name__}), so whose dataset this is cannot be told; "
            "fix it, or remove it if the folder holds only bids_usb outputs (a new one is written)"
        ) from exc
    generated = content.get("GeneratedBy") if isinstance(content, dict) else None
    names = [g.get("Name") for g in generated if isinstance(g, dict)] if isinstance(generated, list) else []
    if "bids_usb" not in names:
        other = ", ".join(str(n) for n in names if n) or "no GeneratedBy"
        raise UsageError(
            f"output_dir {output_dir} already holds another dataset ({desc} names {other}); bids_usb would "
            f"overwrite its files. Give a folder of its own, e.g. {Path(output_dir).parent / 'bids_usb'}"
        )


def create_dir(path: str | os.PathLike, what: str) -> list[Path]:
    """Create ``path`` (and its parents) and check that files can be written there (exit 73).

    Returns the directories this call created, deepest last, so that a run that stops before
    writing anything can remove them again.
    """
    path = Path(path)
    made = []
    probe = path
    while not probe.exists() and probe.parent != probe:
        made.append(probe)
        probe = probe.parent
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".bids_usb_write_test_"):
            pass
    except OSError as exc:
        remove_empty_dirs(reversed(made))
        reason = exc.strerror or exc.__class__.__name__
        raise CannotCreateOutput(
            f"{what} {path} cannot be created or written to ({reason}); give a folder you can write to"
        ) from exc
    return list(reversed(made))


def remove_empty_dirs(paths: Iterable[Path]) -> None:
    """Remove the given directories, deepest first, where they are still empty."""
    for path in sorted(paths, key=lambda p: len(p.parts), reverse=True):
        try:
            path.rmdir()
        except OSError:
            pass


def dataset_check(bids_dir: str | os.PathLike) -> Path:
    """Cheap checks on the input dataset before anything else runs; returns the resolved path.

    * not a directory -> :class:`UsageError` (64)
    * no (or unreadable) ``dataset_description.json`` -> :class:`ValidationFailed` (16)
    * no ``sub-<label>`` folder -> :class:`NoInput` (66)
    """
    path = Path(bids_dir).expanduser()
    if not path.is_dir():
        what = "does not exist" if not path.exists() else "is not a directory"
        raise UsageError(f"bids_dir {bids_dir} {what}; give the root folder of a BIDS dataset")
    root = path.resolve()
    desc = root / "dataset_description.json"
    if not desc.is_file():
        raise ValidationFailed(
            f"{root} has no dataset_description.json, so it is not a BIDS dataset; "
            "add a dataset_description.json or pass --skip-bids-validation"
        )
    try:
        content = json.loads(desc.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValidationFailed(f"{desc} cannot be read as JSON ({exc}); fix it or pass --skip-bids-validation") from exc
    if not isinstance(content, dict):
        raise ValidationFailed(
            f"{desc} holds a JSON {type(content).__name__}, not an object; fix it or pass --skip-bids-validation"
        )
    if not any(p.is_dir() and p.name.startswith("sub-") for p in root.iterdir()):
        raise NoInput(f"{root} has no sub-<label> folders: there is nothing to process")
    return root


# --------------------------------------------------------------------------------------------
# --bids-filter-file
# --------------------------------------------------------------------------------------------


def _check_filter_value(value: Any) -> bool:
    scalar = (str, int, bool, type(None))
    if isinstance(value, scalar):
        return True
    return isinstance(value, list) and all(isinstance(v, scalar) and v is not None for v in value)


def _normalise_filter(filters: Mapping, origin: str) -> dict[str, dict[str, Any]]:
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
    return _normalise_filter(data, f"--bids-filter-file {path}")


def _pybids_query(entities: Mapping[str, Any], known: Iterable[str], what: str) -> dict[str, Any]:
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


# --------------------------------------------------------------------------------------------
# Collection
# --------------------------------------------------------------------------------------------


def strip_labels(labels: Iterable[str] | str | None, prefix: str) -> list[str] | None:
    """Labels without their ``sub-``/``ses-`` prefix, each once; an empty one is a usage error."""
    if labels is None:
        return None
    if isinstance(labels, str):
        labels = [labels]
    out: list[str] = []
    for label in labels:
        label = str(label).strip()
        if label.startswith(prefix):
            label = label[len(prefix) :]
        if not label:
            raise UsageError(f"empty label given for {prefix.rstrip('-')}")
        if label not in out:
            out.append(label)
    return out


def _clean_entities(entities: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in entities.items():
        # pybids gives run as a PaddedInt; keep its zero padding (run-01 stays "01").
        out[k] = str(v) if k == "run" else v
    return out


def bids_layout(root: Path, database_dir: str | os.PathLike | None = None):
    """A pybids layout of ``root`` with the raw and derivatives entities (no validation: lesion
    ``_roi`` files and derivatives are kept). Both levels discover files through this; with
    ``database_dir`` (``--bids-database-dir``) the index is built there once and shared."""
    from . import database

    if database_dir is not None:
        return database.shared_layout(root, database_dir)[0]
    return database.build_layout(root)


def _listing(labels: Iterable[str], prefix: str, limit: int = 5) -> str:
    labels = sorted(labels)
    shown = ", ".join(f"{prefix}{x}" for x in labels[:limit])
    if len(labels) > limit:
        shown += f", ... ({len(labels)} in all)"
    return shown or "none"


@dataclass
class _Mask:
    path: Path
    entities: dict
    source: str  # "raw-roi", "raw-atlas", "derivatives"
    rank: int


def _says_lesion(entities: Mapping[str, Any], metadata: Mapping[str, Any]) -> bool:
    """A sidecar ``"Type"`` decides; without one, a label or desc mentioning lesion does."""
    kind = metadata.get("Type")
    if isinstance(kind, str) and kind.strip():
        return kind.strip().lower() == "lesion" or (kind.strip().lower() == "roi" and _named_lesion(entities))
    return _named_lesion(entities)


def _named_lesion(entities: Mapping[str, Any]) -> bool:
    label = str(entities.get("label") or "").lower()
    desc = str(entities.get("desc") or "").lower()
    return label == "lesion" or "lesion" in desc


def _raw_masks(layout, subjects: list[str], lesion_query: dict) -> list[_Mask]:
    masks: list[_Mask] = []
    base = dict(datatype="anat", extension=list(NIFTI_EXTENSIONS), subject=subjects)
    for f in layout.get(suffix="roi", **{**base, **lesion_query}):
        ents = _clean_entities(f.get_entities())
        if str(ents.get("label", "")).lower() == "lesion":
            masks.append(_Mask(Path(f.path), ents, "raw-roi", _SOURCE_RANK["raw-roi"]))
    for f in layout.get(suffix="mask", **{**base, **lesion_query}):
        ents = _clean_entities(f.get_entities())
        if _says_lesion(ents, layout.get_metadata(f.path)):
            masks.append(_Mask(Path(f.path), ents, "raw-atlas", _SOURCE_RANK["raw-atlas"]))
    return masks


def _derivative_masks(root: Path, rank: int, subjects: list[str], lesion_query: dict) -> list[_Mask]:
    layout = bids_layout(root)
    masks: list[_Mask] = []
    query = dict(
        datatype="anat",
        extension=list(NIFTI_EXTENSIONS),
        suffix=["mask", "roi"],
        subject=subjects,
    )
    for f in layout.get(**{**query, **lesion_query}):
        ents = _clean_entities(f.get_entities())
        if _says_lesion(ents, layout.get_metadata(f.path)):
            masks.append(_Mask(Path(f.path), ents, "derivatives", rank))
    return masks


def lesion_masks(root: Path) -> list[Path]:
    """Every lesion mask of a BIDS dataset, found as the participant level finds them: raw
    ``label-lesion_roi`` files, raw ``_mask`` files that say lesion, and the masks of each
    derivatives dataset under ``root/derivatives`` (one with a ``dataset_description.json``)."""
    from bids.layout import Query

    root = Path(root)
    masks = _raw_masks(bids_layout(root), Query.ANY, {})
    derivatives = root / "derivatives"
    if derivatives.is_dir():
        for sub in sorted(p for p in derivatives.iterdir() if (p / "dataset_description.json").is_file()):
            masks += _derivative_masks(sub, _SOURCE_RANK["derivatives"], Query.ANY, {})
    return sorted({m.path for m in masks})


def _derivative_roots(
    lesion_masks_dir: str | os.PathLike | None,
    derivatives: str | os.PathLike | Iterable[str | os.PathLike] | None,
) -> list[tuple[Path, int]]:
    roots: list[tuple[Path, int]] = []
    if lesion_masks_dir is not None:
        roots.append((Path(lesion_masks_dir), _SOURCE_RANK["lesion_masks_dir"]))
    if derivatives is not None:
        if isinstance(derivatives, (str, os.PathLike)):
            derivatives = [derivatives]
        roots.extend((Path(d), _SOURCE_RANK["derivatives"]) for d in derivatives)
    out: list[tuple[Path, int]] = []
    seen: set[Path] = set()
    for root, rank in roots:
        what = "--lesion-masks" if rank == _SOURCE_RANK["lesion_masks_dir"] else "--derivatives"
        if not root.expanduser().is_dir():
            raise UsageError(f"{what} {root} is not a directory")
        resolved = root.expanduser().resolve()
        if not (resolved / "dataset_description.json").is_file():
            raise UsageError(
                f"{what} {root} has no dataset_description.json; a derivatives dataset needs one "
                '(with "DatasetType": "derivative")'
            )
        if resolved not in seen:
            seen.add(resolved)
            out.append((resolved, rank))
    return out


def _mask_score(image: Mapping[str, Any], mask: Mapping[str, Any]) -> int | None:
    """How specifically ``mask`` fits ``image`` (higher is better), or None if it does not."""
    if mask.get("subject") != image.get("subject"):
        return None
    if mask.get("session") != image.get("session"):
        return None
    score = 0
    for name in _MATCH_ENTITIES:
        if name in mask:
            if name not in image or str(mask[name]) != str(image[name]):
                return None
            score += 1
    mspace, ispace = mask.get("space"), image.get("space")
    if mspace is not None:
        if mspace == ispace:
            score += 1
        elif not (ispace is None and mspace in _NATIVE_SPACES):
            return None
    return score


def _pick_mask(image: AnatInput, masks: list[_Mask]) -> _Mask | None:
    scored = [((m.rank, s), m) for m in masks if (s := _mask_score(image.entities, m.entities)) is not None]
    if not scored:
        return None
    best = max(k for k, _ in scored)
    winners = [m for k, m in scored if k == best]
    if len({m.path for m in winners}) > 1:
        names = ", ".join(str(m.path) for m in winners)
        raise DataError(
            f"{image.path.name}: more than one lesion mask fits equally well ({names}); "
            'keep one, or choose with a "lesion" entry in --bids-filter-file '
            '(e.g. {"lesion": {"desc": "T1lesion"}})'
        )
    return winners[0]


def _drop_duplicates(images: list) -> list:
    """One file per entity set: prefer .nii.gz over .nii, and a space-less image over a spaced one."""
    by_key: dict[tuple, list] = defaultdict(list)
    for f in images:
        ents = f.get_entities()
        key = tuple(sorted((k, str(v)) for k, v in ents.items() if k not in ("extension", "space")))
        by_key[key].append(f)
    kept = []
    for group in by_key.values():
        group.sort(
            key=lambda f: (
                f.get_entities().get("space") is not None,
                f.get_entities().get("extension") != ".nii.gz",
                f.path,
            )
        )
        kept.append(group[0])
    return kept


def collect_inputs(
    bids_dir: str | os.PathLike,
    participant_labels: Iterable[str] | str | None = None,
    session_labels: Iterable[str] | str | None = None,
    bids_filter: Mapping[str, Mapping[str, Any]] | None = None,
    contrast: str = "T1w",
    lesion_masks_dir: str | os.PathLike | None = None,
    derivatives: str | os.PathLike | Iterable[str | os.PathLike] | None = None,
    database_dir: str | os.PathLike | None = None,
) -> CollectResult:
    """Select the ``anat/`` images of ``contrast`` to process and attach their lesion masks.

    Raises :class:`UsageError` for a bad contrast, filter or derivatives folder,
    :class:`NothingSelected` when the participant or session labels match nothing in the
    dataset or when the filters leave no image at all, and :class:`DataError` when two lesion
    masks fit one image equally well. Participants selected but without an image go to
    ``result.missing`` (the caller reports them, exit 66, while the others run).

    Images with a ``desc`` or ``label`` entity are derived and skipped. An image with a
    ``space`` entity (ATLAS R2.0 ships ``..._space-MNI152NLin2009aSym_T1w.nii.gz``) is used only
    when there is no space-less image with the same other entities. ``database_dir``: the
    dataset's pybids index shared between runs (``bids_usb.database``).
    """
    from bids.layout import Query

    by_lower = {c.lower(): c for c in CONTRASTS}
    if str(contrast).lower() not in by_lower:
        raise UsageError(f"contrast {contrast!r} is not supported; use one of {', '.join(CONTRASTS)}")
    contrast = by_lower[str(contrast).lower()]

    root = Path(bids_dir).expanduser()
    if not root.is_dir():
        raise UsageError(f"bids_dir {bids_dir} is not a directory")
    root = root.resolve()

    filters = _normalise_filter(bids_filter, "bids filter") if bids_filter else {}
    mask_roots = _derivative_roots(lesion_masks_dir, derivatives)

    layout = bids_layout(root, database_dir)
    known_entities = layout.get_entities().keys()

    participants = strip_labels(participant_labels, "sub-")
    unknown: list[str] = []
    if participants:
        # Only the selected participants' files are queried (an array task's one participant in
        # a large dataset); the full listing only for the message when nobody matches.
        found = set(layout.get(subject=participants, target="subject", return_type="id"))
        unknown = [p for p in participants if p not in found]
        if len(unknown) == len(participants):
            available = sorted(layout.get_subjects())
            raise NothingSelected(
                f"no participant in {root} matches --participant-label "
                f"{' '.join(participants)} (available: {_listing(available, 'sub-')})"
            )
    else:
        participants = sorted(layout.get_subjects())
    present = [p for p in participants if p not in unknown]

    sessions = strip_labels(session_labels, "ses-")
    if sessions:
        have = set(layout.get_sessions(subject=present)) if present else set()
        if not have.intersection(sessions):
            raise NothingSelected(
                f"no session of the selected participants in {root} matches --session-label "
                f"{' '.join(sessions)} (available: {_listing(have, 'ses-')})"
            )

    filter_key = FILTER_KEYS[contrast]
    image_filter = _pybids_query(filters.get(filter_key, {}), known_entities, filter_key)
    lesion_filter = _pybids_query(filters.get(LESION_FILTER_KEY, {}), known_entities, LESION_FILTER_KEY)

    query: dict[str, Any] = dict(
        datatype="anat",
        suffix=contrast,
        extension=list(NIFTI_EXTENSIONS),
        **{name: Query.NONE for name in _DERIVED_IMAGE_ENTITIES},
    )
    if sessions:
        query["session"] = sessions
    query.update(image_filter)
    query["subject"] = present

    files = _drop_duplicates(layout.get(**query)) if present else []

    masks: list[_Mask] = []
    if present:
        masks.extend(_raw_masks(layout, present, lesion_filter))
        for mroot, rank in mask_roots:
            masks.extend(_derivative_masks(mroot, rank, present, lesion_filter))

    if present and lesion_filter and not masks:
        where = " or ".join([str(root), *(str(m) for m, _ in mask_roots)])
        raise NothingSelected(
            f"bids filter {LESION_FILTER_KEY!r}: {json.dumps(filters[LESION_FILTER_KEY])} matches no lesion mask in "
            f"{where}; fix the query (its entities must match the masks' names) or drop it to use every mask"
        )

    inputs: list[AnatInput] = []
    for f in files:
        ents = _clean_entities(f.get_entities())
        item = AnatInput(
            subject=ents["subject"],
            session=ents.get("session"),
            run=ents.get("run"),
            suffix=contrast,
            path=Path(f.path),
            entities=ents,
        )
        chosen = _pick_mask(item, masks)
        if chosen is not None:
            item.lesion_mask = chosen.path
            item.mask_source = chosen.source
        inputs.append(item)

    inputs.sort(
        key=lambda i: (
            i.subject,
            i.session or "",
            i.acquisition or "",
            i.run or "",
            str(i.path),
        )
    )
    found = {i.subject for i in inputs}
    missing = [p for p in participants if p not in found]

    if not inputs and (sessions or image_filter):
        parts = []
        if sessions:
            parts.append(f"--session-label {' '.join(sessions)}")
        if image_filter:
            parts.append(f"bids filter {filter_key!r}: {json.dumps(filters[filter_key])}")
        raise NothingSelected(
            f"no {contrast} image in {root} is left after {' and '.join(parts)} "
            f"(participants: {_listing(participants, 'sub-')})"
        )
    return CollectResult(inputs=inputs, missing=missing, unknown=unknown)
