"""Discovery: find the anatomical images to heal, and their lesion masks, in a BIDS dataset.

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

The folder checks that run before discovery are in :mod:`bids_usb.directories`, and the
``--bids-filter-file`` parsing in :mod:`bids_usb.bids_filter`.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .bids_filter import FILTER_KEYS, LESION_FILTER_KEY, normalise_filter, pybids_query
from .errors import DataError, NothingSelected, UsageError

__all__ = [
    "RAW_MASK_GLOBS",
    "AnatInput",
    "CollectResult",
    "bids_layout",
    "collect_inputs",
    "lesion_masks",
    "strip_labels",
]

NIFTI_EXTENSIONS = (".nii", ".nii.gz")
# The raw-dataset lesion masks this app reads, as globs the validator's configuration takes
# (relative to the dataset root, no leading "/"; one "*" per path segment: bids-validator-deno
# 3.0.2 matches nothing with "*_desc-*lesion_mask"). They are not BIDS files, so the validator
# calls them NOT_INCLUDED; the app tells it they are expected (``validation.validate_or_raise``)
# instead of asking the user for a .bidsignore. Covered: fMRIPrep's ``_label-lesion_roi`` and
# every ``_mask`` whose name ends in ``lesion_mask`` (ATLAS's ``_label-L_desc-T1lesion_mask``,
# ``_label-lesion_mask``, ``_desc-lesion_mask``), with their sidecars. A raw ``_mask`` known as a
# lesion only by its sidecar's "Type" still needs the user's .bidsignore.
RAW_MASK_GLOBS = tuple(
    f"sub-*/**/anat/*{name}{ext}"
    for name in ("_label-lesion_roi", "lesion_mask")
    for ext in (*NIFTI_EXTENSIONS, ".json")
)
CONTRASTS = ("T1w", "FLAIR")
MASK_SOURCES = ("raw-roi", "raw-atlas", "derivatives")

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


def _participants(layout, root: Path, participant_labels) -> tuple[list[str], list[str]]:
    """(every selected participant, those of them the dataset lacks); none found is an error."""
    participants = strip_labels(participant_labels, "sub-")
    if not participants:
        return sorted(layout.get_subjects()), []
    # Only the selected participants' files are queried (an array task's one participant in a
    # large dataset); the full listing only for the message when nobody matches.
    found = set(layout.get(subject=participants, target="subject", return_type="id"))
    unknown = [p for p in participants if p not in found]
    if len(unknown) == len(participants):
        available = sorted(layout.get_subjects())
        raise NothingSelected(
            f"no participant in {root} matches --participant-label "
            f"{' '.join(participants)} (available: {_listing(available, 'sub-')})"
        )
    return participants, unknown


def _sessions(layout, root: Path, session_labels, present: list[str]) -> list[str] | None:
    sessions = strip_labels(session_labels, "ses-")
    if sessions:
        have = set(layout.get_sessions(subject=present)) if present else set()
        if not have.intersection(sessions):
            raise NothingSelected(
                f"no session of the selected participants in {root} matches --session-label "
                f"{' '.join(sessions)} (available: {_listing(have, 'ses-')})"
            )
    return sessions


def _images(layout, contrast: str, present: list[str], sessions, image_filter: dict) -> list:
    """The raw (space-less, underived) ``anat/`` images of ``contrast``, one per entity set."""
    from bids.layout import Query

    if not present:
        return []
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
    return _drop_duplicates(layout.get(**query))


def _masks(layout, root: Path, mask_roots, present: list[str], lesion_filter: dict, filters: dict) -> list[_Mask]:
    """Every lesion mask of the selected participants, raw and derivatives alike."""
    if not present:
        return []
    masks = _raw_masks(layout, present, lesion_filter)
    for mroot, rank in mask_roots:
        masks.extend(_derivative_masks(mroot, rank, present, lesion_filter))
    if lesion_filter and not masks:
        where = " or ".join([str(root), *(str(m) for m, _ in mask_roots)])
        raise NothingSelected(
            f"bids filter {LESION_FILTER_KEY!r}: {json.dumps(filters[LESION_FILTER_KEY])} matches no lesion mask in "
            f"{where}; fix the query (its entities must match the masks' names) or drop it to use every mask"
        )
    return masks


def _anat_input(f, contrast: str, masks: list[_Mask]) -> AnatInput:
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
    return item


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
    by_lower = {c.lower(): c for c in CONTRASTS}
    if str(contrast).lower() not in by_lower:
        raise UsageError(f"contrast {contrast!r} is not supported; use one of {', '.join(CONTRASTS)}")
    contrast = by_lower[str(contrast).lower()]

    root = Path(bids_dir).expanduser()
    if not root.is_dir():
        raise UsageError(f"bids_dir {bids_dir} is not a directory")
    root = root.resolve()

    filters = normalise_filter(bids_filter, "bids filter") if bids_filter else {}
    mask_roots = _derivative_roots(lesion_masks_dir, derivatives)

    layout = bids_layout(root, database_dir)
    known_entities = layout.get_entities().keys()
    participants, unknown = _participants(layout, root, participant_labels)
    present = [p for p in participants if p not in unknown]
    sessions = _sessions(layout, root, session_labels, present)

    filter_key = FILTER_KEYS[contrast]
    image_filter = pybids_query(filters.get(filter_key, {}), known_entities, filter_key)
    lesion_filter = pybids_query(filters.get(LESION_FILTER_KEY, {}), known_entities, LESION_FILTER_KEY)

    files = _images(layout, contrast, present, sessions, image_filter)
    masks = _masks(layout, root, mask_roots, present, lesion_filter, filters)
    inputs = sorted(
        (_anat_input(f, contrast, masks) for f in files),
        key=lambda i: (i.subject, i.session or "", i.acquisition or "", i.run or "", str(i.path)),
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
