"""BIDS input discovery: images, lesion masks in their three forms, selection and dir checks."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nb
import numpy as np
import pytest

from bids_usb.bids_filter import load_bids_filter
from bids_usb.directories import check_output_dir, check_work_dir, dataset_check
from bids_usb.discovery import collect_inputs
from bids_usb.errors import DataError, NoInput, NothingSelected, UsageError, ValidationFailed


def _nii(path: Path, mask: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.zeros((8, 8, 8), np.uint8)
    data[2:6, 2:6, 2:6] = 1 if mask else 100
    img = nb.Nifti1Image(data, np.eye(4))
    img.header.set_xyzt_units("mm")
    nb.save(img, str(path))
    return path


def _json(path: Path, content: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))
    return path


def _description(root: Path, derivative: bool = False) -> None:
    desc = {"Name": root.name, "BIDSVersion": "1.10.0"}
    if derivative:
        desc.update(DatasetType="derivative", GeneratedBy=[{"Name": "manual"}])
    _json(root / "dataset_description.json", desc)


@pytest.fixture()
def ds(tmp_path: Path) -> Path:
    """Two sessions and two runs, a raw _roi mask, ATLAS-style masks, a FLAIR-only subject."""
    root = tmp_path / "bids"
    _description(root)
    a = root / "sub-01" / "ses-pre" / "anat"
    _nii(a / "sub-01_ses-pre_run-01_T1w.nii.gz")
    _nii(a / "sub-01_ses-pre_run-02_T1w.nii.gz")
    _nii(a / "sub-01_ses-pre_run-01_label-lesion_roi.nii.gz", mask=True)  # run-01 only
    b = root / "sub-01" / "ses-post" / "anat"
    _nii(b / "sub-01_ses-post_T1w.nii.gz")
    _nii(b / "sub-01_ses-post_label-lesion_roi.nii.gz", mask=True)
    c = root / "sub-02" / "anat"
    _nii(c / "sub-02_acq-mprage_T1w.nii.gz")
    _nii(c / "sub-02_acq-fast_T1w.nii.gz")
    _nii(c / "sub-02_acq-mprage_label-L_desc-T1lesion_mask.nii.gz", mask=True)
    _nii(c / "sub-02_FLAIR.nii.gz")
    _nii(root / "sub-03" / "anat" / "sub-03_FLAIR.nii.gz")  # no T1w
    d = root / "sub-04" / "anat"
    _nii(d / "sub-04_T1w.nii.gz")
    _nii(d / "sub-04_desc-preproc_T1w.nii.gz")  # derived, never an input
    # ATLAS R2.0 naming: the T1w itself carries a space entity.
    e = root / "sub-05" / "ses-1" / "anat"
    _nii(e / "sub-05_ses-1_space-MNI152NLin2009aSym_T1w.nii.gz")
    _nii(e / "sub-05_ses-1_space-MNI152NLin2009aSym_label-L_desc-T1lesion_mask.nii.gz", mask=True)
    # A derivatives dataset inside the raw one must not be read as raw data.
    deriv = root / "derivatives" / "bids_usb"
    _description(deriv, derivative=True)
    _nii(deriv / "sub-01" / "ses-post" / "anat" / "sub-01_ses-post_desc-healed_T1w.nii.gz")
    _nii(deriv / "sub-06" / "anat" / "sub-06_T1w.nii.gz")
    return root


@pytest.fixture()
def masks_ds(tmp_path: Path) -> Path:
    """A derivatives dataset of lesion masks (outside the raw dataset)."""
    root = tmp_path / "masks"
    _description(root, derivative=True)
    a = root / "sub-04" / "anat"
    _nii(a / "sub-04_label-stroke_mask.nii.gz", mask=True)
    _json(a / "sub-04_label-stroke_mask.json", {"Type": "Lesion"})
    _nii(a / "sub-04_label-brain_mask.nii.gz", mask=True)
    _json(a / "sub-04_label-brain_mask.json", {"Type": "Brain"})
    b = root / "sub-01" / "ses-post" / "anat"
    _nii(b / "sub-01_ses-post_desc-lesion_mask.nii.gz", mask=True)
    return root


def _by_name(result):
    return {i.path.name: i for i in result.inputs}


def test_collects_t1w_runs_sessions_and_raw_masks(ds):
    result = collect_inputs(ds)
    found = _by_name(result)
    assert sorted(found) == [
        "sub-01_ses-post_T1w.nii.gz",
        "sub-01_ses-pre_run-01_T1w.nii.gz",
        "sub-01_ses-pre_run-02_T1w.nii.gz",
        "sub-02_acq-fast_T1w.nii.gz",
        "sub-02_acq-mprage_T1w.nii.gz",
        "sub-04_T1w.nii.gz",
        "sub-05_ses-1_space-MNI152NLin2009aSym_T1w.nii.gz",
    ]
    assert result.missing == ["03"] and result.unknown == []

    run1 = found["sub-01_ses-pre_run-01_T1w.nii.gz"]
    assert (run1.subject, run1.session, run1.run, run1.suffix) == ("01", "pre", "01", "T1w")
    assert run1.lesion_mask.name == "sub-01_ses-pre_run-01_label-lesion_roi.nii.gz"
    assert run1.mask_source == "raw-roi"
    assert run1.source_stem == "sub-01_ses-pre_run-01"
    assert run1.entities["run"] == "01" and run1.entities["datatype"] == "anat"
    # The run-01 mask does not serve run-02.
    run2 = found["sub-01_ses-pre_run-02_T1w.nii.gz"]
    assert run2.lesion_mask is None and run2.mask_source is None
    post = found["sub-01_ses-post_T1w.nii.gz"]
    assert post.lesion_mask.name == "sub-01_ses-post_label-lesion_roi.nii.gz"
    assert post.session == "post" and post.run is None

    mprage = found["sub-02_acq-mprage_T1w.nii.gz"]
    assert mprage.lesion_mask.name == "sub-02_acq-mprage_label-L_desc-T1lesion_mask.nii.gz"
    assert mprage.mask_source == "raw-atlas" and mprage.acquisition == "mprage"
    # The acq-mprage mask does not serve acq-fast.
    assert found["sub-02_acq-fast_T1w.nii.gz"].lesion_mask is None
    assert found["sub-04_T1w.nii.gz"].lesion_mask is None
    atlas = found["sub-05_ses-1_space-MNI152NLin2009aSym_T1w.nii.gz"]
    assert atlas.lesion_mask.name.endswith("_space-MNI152NLin2009aSym_label-L_desc-T1lesion_mask.nii.gz")
    assert atlas.mask_source == "raw-atlas"
    assert all(isinstance(i.path, Path) and i.path.is_absolute() for i in result.inputs)
    assert [i.subject for i in result.inputs] == sorted(i.subject for i in result.inputs)


def test_space_less_image_preferred_over_spaced_twin(ds):
    _nii(ds / "sub-04" / "anat" / "sub-04_space-MNI152NLin2009aSym_T1w.nii.gz")
    names = [i.path.name for i in collect_inputs(ds, ["04"]).inputs]
    assert names == ["sub-04_T1w.nii.gz"]


def test_spaced_mask_does_not_serve_a_native_image(ds):
    _nii(ds / "sub-04" / "anat" / "sub-04_space-MNI152NLin2009aSym_desc-lesion_mask.nii.gz", mask=True)
    (item,) = collect_inputs(ds, ["04"]).inputs
    assert item.lesion_mask is None


def test_participant_labels_with_or_without_prefix(ds):
    result = collect_inputs(ds, participant_labels=["sub-01", "02"])
    assert result.subjects == ["01", "02"]
    assert result.missing == []
    assert collect_inputs(ds, participant_labels="sub-04").subjects == ["04"]


def test_participant_labels_matching_nobody(ds):
    with pytest.raises(NothingSelected) as info:
        collect_inputs(ds, participant_labels=["sub-99", "98"])
    assert info.value.exit_code == 18
    msg = str(info.value)
    assert "99" in msg and "98" in msg and "sub-01" in msg


def test_unknown_and_contrastless_participants_are_missing(ds):
    result = collect_inputs(ds, participant_labels=["01", "03", "99"])
    assert result.subjects == ["01"]
    assert result.missing == ["03", "99"]
    assert result.unknown == ["99"]


def test_session_labels(ds):
    result = collect_inputs(ds, participant_labels=["01", "02"], session_labels=["ses-post"])
    assert [i.path.name for i in result.inputs] == ["sub-01_ses-post_T1w.nii.gz"]
    assert result.missing == ["02"]
    with pytest.raises(NothingSelected) as info:
        collect_inputs(ds, session_labels=["nope"])
    assert info.value.exit_code == 18 and "ses-pre" in str(info.value)


def test_flair_contrast(ds):
    result = collect_inputs(ds, contrast="FLAIR")
    assert [i.path.name for i in result.inputs] == ["sub-02_FLAIR.nii.gz", "sub-03_FLAIR.nii.gz"]
    assert all(i.suffix == "FLAIR" for i in result.inputs)
    assert result.missing == ["01", "04", "05"]
    with pytest.raises(UsageError):
        collect_inputs(ds, contrast="T2w")


def test_bids_filter(ds):
    result = collect_inputs(ds, bids_filter={"t1w": {"acquisition": "mprage"}})
    assert [i.path.name for i in result.inputs] == ["sub-02_acq-mprage_T1w.nii.gz"]
    assert "01" in result.missing
    # Short keys, null for "absent", and the flair entry ignored for T1w.
    result = collect_inputs(ds, ["01"], bids_filter={"t1w": {"ses": "pre", "run": 2}, "flair": {"acq": "x"}})
    assert [i.path.name for i in result.inputs] == ["sub-01_ses-pre_run-02_T1w.nii.gz"]
    result = collect_inputs(ds, ["02", "04"], bids_filter={"t1w": {"acq": None}})
    assert result.subjects == ["04"] and result.missing == ["02"]
    with pytest.raises(NothingSelected) as info:
        collect_inputs(ds, bids_filter={"t1w": {"acquisition": "nothing"}})
    assert info.value.exit_code == 18 and "nothing" in str(info.value)
    with pytest.raises(UsageError, match="foo"):
        collect_inputs(ds, bids_filter={"t1w": {"foo": "bar"}})
    with pytest.raises(UsageError, match="participant-label"):
        collect_inputs(ds, bids_filter={"t1w": {"subject": "01"}})


def test_lesion_filter_chooses_between_masks(ds):
    # sub-01 ses-post gets a second raw mask of another kind; the roi wins by rank,
    # and a "lesion" filter can pick the other one.
    other = ds / "sub-01" / "ses-post" / "anat" / "sub-01_ses-post_label-L_desc-T1lesion_mask.nii.gz"
    _nii(other, mask=True)
    (item,) = collect_inputs(ds, ["01"], ["post"]).inputs
    assert item.mask_source == "raw-roi"
    (item,) = collect_inputs(ds, ["01"], ["post"], bids_filter={"lesion": {"desc": "T1lesion"}}).inputs
    assert item.lesion_mask == other and item.mask_source == "raw-atlas"


def test_load_bids_filter(tmp_path):
    good = _json(tmp_path / "f.json", {"t1w": {"acq": "mprage", "run": [1, 2]}, "bold": {"task": "rest"}})
    assert load_bids_filter(good)["t1w"] == {"acquisition": "mprage", "run": [1, 2]}
    assert load_bids_filter(None) is None
    bad = tmp_path / "bad.json"
    bad.write_text('{"t1w": {"acquisition": "mprage",}}')
    with pytest.raises(UsageError) as info:
        load_bids_filter(bad)
    assert info.value.exit_code == 64 and "bad.json" in str(info.value) and "line 1" in str(info.value)
    for content in (["t1w"], {"t1w": "mprage"}, {"t1w": {"acq": {"x": 1}}}):
        (tmp_path / "odd.json").write_text(json.dumps(content))
        with pytest.raises(UsageError, match="odd.json"):
            load_bids_filter(tmp_path / "odd.json")
    with pytest.raises(UsageError, match="absent.json"):
        load_bids_filter(tmp_path / "absent.json")


def test_lesion_masks_dir(ds, masks_ds):
    result = collect_inputs(ds, lesion_masks_dir=masks_ds)
    found = _by_name(result)
    sub4 = found["sub-04_T1w.nii.gz"]
    assert sub4.lesion_mask == masks_ds / "sub-04" / "anat" / "sub-04_label-stroke_mask.nii.gz"
    assert sub4.mask_source == "derivatives"
    # The explicitly given masks win over the raw _roi.
    post = found["sub-01_ses-post_T1w.nii.gz"]
    assert post.lesion_mask.name == "sub-01_ses-post_desc-lesion_mask.nii.gz"
    assert post.mask_source == "derivatives"
    # Subjects it has nothing for keep their raw masks.
    assert found["sub-01_ses-pre_run-01_T1w.nii.gz"].mask_source == "raw-roi"
    assert found["sub-02_acq-mprage_T1w.nii.gz"].mask_source == "raw-atlas"


def test_derivatives_list_and_priority(ds, masks_ds, tmp_path):
    other = tmp_path / "other"
    _description(other, derivative=True)
    _nii(other / "sub-04" / "anat" / "sub-04_desc-lesion_mask.nii.gz", mask=True)
    (item,) = collect_inputs(ds, ["04"], derivatives=[other]).inputs
    assert item.lesion_mask == other.resolve() / "sub-04" / "anat" / "sub-04_desc-lesion_mask.nii.gz"
    assert item.mask_source == "derivatives"
    # lesion_masks_dir outranks --derivatives
    (item,) = collect_inputs(ds, ["04"], lesion_masks_dir=masks_ds, derivatives=str(other)).inputs
    assert item.lesion_mask.name == "sub-04_label-stroke_mask.nii.gz"


def test_derivatives_without_description(ds, tmp_path):
    bare = tmp_path / "bare"
    _nii(bare / "sub-04" / "anat" / "sub-04_desc-lesion_mask.nii.gz", mask=True)
    with pytest.raises(UsageError) as info:
        collect_inputs(ds, lesion_masks_dir=bare)
    assert info.value.exit_code == 64 and str(bare) in str(info.value)
    assert "dataset_description.json" in str(info.value)
    with pytest.raises(UsageError, match="derivatives"):
        collect_inputs(ds, derivatives=[bare])
    with pytest.raises(UsageError, match="not a directory"):
        collect_inputs(ds, lesion_masks_dir=tmp_path / "nowhere")


def test_two_equal_masks_are_an_error(ds, masks_ds):
    a = masks_ds / "sub-04" / "anat"
    _nii(a / "sub-04_desc-lesion_mask.nii.gz", mask=True)
    with pytest.raises(DataError) as info:
        collect_inputs(ds, ["04"], lesion_masks_dir=masks_ds)
    assert info.value.exit_code == 65
    assert "sub-04_desc-lesion_mask" in str(info.value) and "sub-04_label-stroke_mask" in str(info.value)


def test_works_without_dataset_description(ds):
    # --skip-bids-validation: discovery must not depend on the description file.
    (ds / "dataset_description.json").unlink()
    assert collect_inputs(ds, ["01"]).subjects == ["01"]


def test_bids_dir_not_a_directory(tmp_path):
    with pytest.raises(UsageError):
        collect_inputs(tmp_path / "nowhere")


def test_check_output_dir(ds, tmp_path):
    with pytest.raises(UsageError) as info:
        check_output_dir(ds, ds)
    assert info.value.exit_code == 64
    with pytest.raises(UsageError, match="derivatives"):
        check_output_dir(ds, ds / "out")
    with pytest.raises(UsageError):
        check_output_dir(ds, ds / "sub-01" / "x")
    with pytest.raises(UsageError):
        check_output_dir(ds, ds / "derivatives")
    assert check_output_dir(ds, ds / "derivatives" / "bids_usb") == ds / "derivatives" / "bids_usb"
    assert check_output_dir(ds, tmp_path / "out") == tmp_path / "out"
    assert check_output_dir(str(ds), str(ds / ".." / "out2")) == tmp_path / "out2"
    # Symlinks are resolved: a link outside that points inside is refused.
    (tmp_path / "link").symlink_to(ds)
    with pytest.raises(UsageError):
        check_output_dir(ds, tmp_path / "link" / "out")
    with pytest.raises(UsageError):
        check_output_dir(tmp_path / "link", ds)


def test_check_work_dir(ds, tmp_path):
    assert check_work_dir(ds, tmp_path / "work") == tmp_path / "work"
    for bad in (ds, ds / "work", ds / "derivatives" / "work"):
        with pytest.raises(UsageError) as info:
            check_work_dir(ds, bad)
        assert info.value.exit_code == 64
    (tmp_path / "wlink").symlink_to(ds / "derivatives")
    with pytest.raises(UsageError):
        check_work_dir(ds, tmp_path / "wlink" / "w")


def test_dataset_check(ds, tmp_path):
    assert dataset_check(ds) == ds.resolve()
    with pytest.raises(UsageError):
        dataset_check(tmp_path / "nowhere")
    with pytest.raises(UsageError):
        dataset_check(ds / "dataset_description.json")
    (ds / "dataset_description.json").write_text("{not json")
    with pytest.raises(ValidationFailed) as info:
        dataset_check(ds)
    assert info.value.exit_code == 16 and "dataset_description.json" in str(info.value)
    (ds / "dataset_description.json").unlink()
    with pytest.raises(ValidationFailed) as info:
        dataset_check(ds)
    msg = str(info.value)
    assert "add a dataset_description.json or pass --skip-bids-validation" in msg
    empty = tmp_path / "empty"
    _description(empty)
    with pytest.raises(NoInput) as info:
        dataset_check(empty)
    assert info.value.exit_code == 66


# --------------------------------------------------------------------------------------------
# --bids-database-dir: one pybids index shared by the runs (array tasks) of a dataset
# --------------------------------------------------------------------------------------------


def _selection(result) -> list[tuple]:
    return [(i.path, i.lesion_mask, i.mask_source, sorted(i.entities.items())) for i in result.inputs]


def test_a_shared_index_is_built_once_and_gives_the_same_images(ds, masks_ds, tmp_path):
    from bids_usb.database import INDEX_FILE, NOTE_FILE, check_database_dir, shared_layout

    db = check_database_dir(ds, tmp_path / "scratch" / "db")  # created
    plain = collect_inputs(ds, lesion_masks_dir=masks_ds)
    first = collect_inputs(ds, lesion_masks_dir=masks_ds, database_dir=db)
    assert (db / INDEX_FILE).is_file() and json.loads((db / NOTE_FILE).read_text())["root"] == str(ds.resolve())
    assert not [p for p in db.iterdir() if p.name.startswith(".building-")]
    stamp = (db / INDEX_FILE).stat().st_mtime_ns
    again = collect_inputs(ds, ["01", "02"], lesion_masks_dir=masks_ds, database_dir=db)
    assert _selection(first) == _selection(plain) and first.missing == plain.missing == ["03"]
    assert _selection(again) == [s for s in _selection(plain) if dict(s[3])["subject"] in ("01", "02")]
    assert (db / INDEX_FILE).stat().st_mtime_ns == stamp
    # A later run reads the index rather than the folders: a file added since is not seen
    # (the documented staleness: delete the directory after changing the dataset).
    _nii(ds / "sub-07" / "anat" / "sub-07_T1w.nii.gz")
    assert "07" in collect_inputs(ds).subjects
    assert "07" not in collect_inputs(ds, database_dir=db).subjects
    assert shared_layout(ds, db)[1] is False


def _build_in_a_process(args):
    from bids_usb.database import shared_layout

    layout, built = shared_layout(*args)
    return built, sorted(layout.get_subjects())


def test_tasks_starting_together_build_the_index_once(ds, tmp_path):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from bids_usb.database import check_database_dir

    db = check_database_dir(ds, tmp_path / "db")
    with ProcessPoolExecutor(3, mp_context=multiprocessing.get_context("fork")) as pool:
        results = list(pool.map(_build_in_a_process, [(ds, db)] * 3))
    assert sorted(built for built, _ in results) == [False, False, True], results
    assert {tuple(subjects) for _, subjects in results} == {("01", "02", "03", "04", "05")}


def test_a_database_dir_that_cannot_serve_is_one_line_and_an_exit_code(ds, tmp_path):
    from bids_usb.database import INDEX_FILE, NOTE_FILE, check_database_dir

    with pytest.raises(UsageError, match="inside the BIDS dataset"):
        check_database_dir(ds, ds / "code" / "db")
    assert not (ds / "code").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="is not a directory"):
        check_database_dir(ds, tmp_path / "file")
    with pytest.raises(Exception, match="cannot be created") as info:
        check_database_dir(ds, tmp_path / "file" / "db")
    assert info.value.exit_code == 73
    # An index of another dataset, or one bids_usb did not build, is refused.
    other = tmp_path / "other"
    _description(other)
    _nii(other / "sub-09" / "anat" / "sub-09_T1w.nii.gz")
    db = check_database_dir(other, tmp_path / "db")
    collect_inputs(other, database_dir=db)
    with pytest.raises(UsageError, match="indexes another dataset"):
        collect_inputs(ds, database_dir=db)
    (db / NOTE_FILE).unlink()
    with pytest.raises(UsageError, match="did not build"):
        collect_inputs(other, database_dir=db)
    assert (db / INDEX_FILE).is_file()
