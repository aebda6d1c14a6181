"""The bad-input table: every case ends with one line naming the file (or option) and its fix,
the BIDS-App exit code, nothing on stdout, and the input dataset byte-identical afterwards.

Each case damages a fresh copy of a small valid dataset (a 80 x 96 x 80 mm head with a lesion
mask) or passes a bad option, and runs the command line in-process. Every case here is refused
before any workflow starts, so the whole table runs in seconds. The table in
``docs/troubleshooting.md`` ("Checked cases") is generated from ``CASES``
(``python tests/test_bad_inputs.py``) and a test checks that it is current.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_usb.cli import main

DOC = Path(__file__).resolve().parents[1] / "docs" / "troubleshooting.md"
BEGIN, END = "<!-- bad-input table: begin -->", "<!-- bad-input table: end -->"

SHAPE, VOXEL = (20, 24, 20), 4.0
T1W = "sub-01/anat/sub-01_T1w.nii.gz"
MASK = "sub-01/anat/sub-01_label-lesion_roi.nii.gz"


def _head() -> np.ndarray:
    head = np.zeros(SHAPE, np.int16)
    head[3:17, 3:21, 3:17] = 200
    head[5:15, 5:19, 5:15] = 300
    return head


def _save(data, path: Path, affine=None, codes: tuple[int, int] | None = None) -> None:
    affine = np.diag([VOXEL, VOXEL, VOXEL, 1.0]) if affine is None else affine
    img = nib.Nifti1Image(data, affine)
    if codes is not None:  # the matrices stay in the header; only their codes change
        img.set_qform(affine, code=codes[0])
        img.set_sform(affine, code=codes[1])
    nib.save(img, str(path))


def _singular(bids: Path, tmp: Path) -> list[str]:
    """sform and qform codes set, the sform matrix all zeros (nibabel cannot build this from an affine)."""
    img = nib.Nifti1Image(_head(), None)
    img.header.set_sform(np.zeros((4, 4)), code=1)
    img.header["qform_code"] = 1
    nib.save(img, str(bids / T1W))
    return []


def _lesion() -> np.ndarray:
    mask = np.zeros(SHAPE, np.uint8)
    mask[8:11, 9:12, 8:11] = 1
    return mask


def make_dataset(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "bad inputs", "BIDSVersion": "1.10.0"}))
    (root / "README").write_text("A small dataset for the bad-input table.\n")
    (root / ".bidsignore").write_text("**/*_roi.nii.gz\n")
    (root / "sub-01" / "anat").mkdir(parents=True)
    _save(_head(), root / T1W)
    _save(_lesion(), root / MASK)
    return root


@dataclass
class Case:
    id: str
    what: str  # the row of the documentation table
    exit: int
    names: str  # what the last stderr line must name: a file of the case, or an option
    damage: Callable[[Path, Path], list[str]] | None = None  # (bids, tmp) -> extra CLI args
    args: tuple[str, ...] = ()
    validate: bool = False  # run bids-validator-deno (slow-ish) instead of --skip-bids-validation
    output: str = "out"  # OUTPUT_DIR relative to tmp ("{bids}/..." for one inside the dataset)


def _write(rel: str, data=None, **kw):
    def damage(bids: Path, tmp: Path) -> list[str]:
        _save(_head() if data is None else data(), bids / rel, **kw)
        return []

    return damage


def _bytes(rel: str, content: Callable[[bytes], bytes]):
    def damage(bids: Path, tmp: Path) -> list[str]:
        path = bids / rel
        path.write_bytes(content(path.read_bytes()))
        return []

    return damage


def _remove(rel: str):
    def damage(bids: Path, tmp: Path) -> list[str]:
        target = bids / rel
        shutil.rmtree(target) if target.is_dir() else target.unlink()
        return []

    return damage


def _nan():
    data = _head().astype(np.float32)
    data[10, 10, 10] = np.nan
    return data


def _model(edit: Callable[[Path, Path], None]):
    """A copy of the tiny checkpoint, damaged by ``edit(model_dir, tmp)``, passed as --model."""

    def damage(bids: Path, tmp: Path) -> list[str]:
        model = tmp / "model"
        shutil.copytree(_TINY[0], model)
        edit(model, tmp)
        return ["--model", str(model)]

    return damage


class _RunsCode:
    """Unpickling this calls ``open(marker, "w")``: a pickle that would run code if loaded normally."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _pickled_weights(model: Path, tmp: Path) -> None:
    with open(model / "model.safetensors", "wb") as fh:
        pickle.dump(_RunsCode(tmp / "UNPICKLED"), fh)


def _wrong_shape(model: Path, tmp: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(model / "model.safetensors"))
    key = sorted(tensors)[0]
    tensors[key] = tensors[key].flatten()[:1].clone()
    save_file(tensors, str(model / "model.safetensors"))


def _other_tools_output(bids: Path, tmp: Path) -> list[str]:
    other = tmp / "other"
    other.mkdir()
    (other / "dataset_description.json").write_text(
        json.dumps(
            {
                "Name": "masks",
                "BIDSVersion": "1.10.0",
                "DatasetType": "derivative",
                "GeneratedBy": [{"Name": "usb-synth"}],
            }
        )
    )
    return []


def _corrupt_output_description(bids: Path, tmp: Path) -> list[str]:
    out = tmp / "out"
    out.mkdir()
    (out / "dataset_description.json").write_text('{"Name": "bids_usb deriv')
    return []


def _file_as(rel: str):
    def damage(bids: Path, tmp: Path) -> list[str]:
        (tmp / rel).write_text("a file where a folder should be\n")
        return []

    return damage


def _work_is_file(bids: Path, tmp: Path) -> list[str]:
    (tmp / "work").write_text("a file\n")
    return ["-w", str(tmp / "work")]


def _shear():
    affine = np.diag([VOXEL, VOXEL, VOXEL, 1.0])
    affine[0, 1] = 1.5
    return affine


def _far_away():
    affine = np.diag([VOXEL, VOXEL, VOXEL, 1.0])
    affine[:3, 3] = 500.0
    return affine


def _whole_head():
    return (_head() > 0).astype(np.uint8)


_TINY: list[Path] = []


def _link(rel: str, target: Callable[[Path, Path], str]):
    """``rel`` replaced by a symlink to ``target(bids, tmp)``, which does not exist."""

    def damage(bids: Path, tmp: Path) -> list[str]:
        path = bids / rel
        path.unlink()
        path.symlink_to(target(bids, tmp))
        return []

    return damage


def _annex_target(bids: Path, tmp: Path) -> str:
    """The relative link DataLad leaves for a file whose content was not fetched (``datalad get``)."""
    (bids / ".git" / "annex" / "objects" / "Xq" / "9v").mkdir(parents=True)
    return "../../.git/annex/objects/Xq/9v/SHA256E-s1234--abc.nii.gz/SHA256E-s1234--abc.nii.gz"


def _scaled(slope: float, inter: float):
    """The T1w with raw scl_slope/scl_inter bytes (nibabel's writer would reset them)."""

    def damage(bids: Path, tmp: Path) -> list[str]:
        import gzip
        import struct

        path = bids / T1W
        raw = bytearray(gzip.decompress(path.read_bytes()))
        raw[112:120] = struct.pack("<ff", slope, inter)
        path.write_bytes(gzip.compress(bytes(raw)))
        return []

    return damage


def _flipped_lps():
    """The mask's voxels as they are, its header flipped to LPS (x and y reversed) over the same field."""
    affine = np.diag([-VOXEL, -VOXEL, VOXEL, 1.0])
    affine[:2, 3] = [(SHAPE[0] - 1) * VOXEL, (SHAPE[1] - 1) * VOXEL]
    return affine


def _filter_file(content: dict):
    def damage(bids: Path, tmp: Path) -> list[str]:
        (tmp / "filter.json").write_text(json.dumps(content))
        return ["--bids-filter-file", str(tmp / "filter.json")]

    return damage


_HELD: list = []


def _work_dir_in_use(bids: Path, tmp: Path) -> list[str]:
    """Another run holds sub-01 on the work directory (its lock, taken here as that run would)."""
    from bids_usb.locks import WorkLock

    _HELD.append(WorkLock.acquire(tmp / "work", ["01"]))
    return ["-w", str(tmp / "work")]


CASES = [
    Case("bids-missing", "BIDS_DIR does not exist", 64, "nowhere", args=("{tmp}/nowhere",)),
    Case("bids-is-file", "BIDS_DIR is a file", 64, "README", args=("{bids}/README",)),
    Case(
        "no-description",
        "no dataset_description.json",
        16,
        "dataset_description.json",
        _remove("dataset_description.json"),
        validate=True,
    ),
    Case(
        "corrupt-description",
        "dataset_description.json is not JSON",
        16,
        "dataset_description.json",
        _bytes("dataset_description.json", lambda b: b[:10]),
        validate=True,
    ),
    Case("no-subjects", "no sub-<label> folder", 66, "sub-", _remove("sub-01"), validate=True),
    Case("output-is-input", "OUTPUT_DIR is BIDS_DIR", 64, "output_dir", output="{bids}"),
    Case(
        "output-inside-input",
        "OUTPUT_DIR inside the dataset, not under derivatives/",
        64,
        "output_dir",
        output="{bids}/out",
    ),
    Case("work-inside-input", "work directory inside the dataset", 64, "work_dir", args=("-w", "{bids}/work")),
    Case("unknown-level", "unknown analysis level", 17, "subject", args=("--level", "subject")),
    Case("unknown-participant", "--participant-label names nobody", 18, "07", args=("--participant-label", "07")),
    Case(
        "empty-participant",
        '--participant-label "" (an unset variable)',
        64,
        "--participant-label",
        args=("--participant-label", ""),
    ),
    Case("blank-participant", '--participant-label " "', 64, "--participant-label", args=("--participant-label", " ")),
    Case(
        "bare-sub-prefix", "--participant-label sub-", 64, "--participant-label", args=("--participant-label", "sub-")
    ),
    Case("empty-session", '--session-label ""', 64, "--session-label", args=("--session-label", "")),
    Case("bad-mem", "--mem is not an amount", 64, "--mem", args=("--mem", "lots")),
    Case(
        "option-of-another-level",
        "a group option at the participant level (--preset)",
        64,
        "--preset",
        args=("--preset", "demo"),
    ),
    Case(
        "option-of-another-task",
        "an embed option when healing (--lesion-from)",
        64,
        "--lesion-from",
        args=("--lesion-from", "sub-01"),
    ),
    Case(
        "heal-option-when-embedding",
        "a heal option when embedding (--heal-mode)",
        64,
        "--heal-mode",
        args=("--task", "embed", "--heal-mode", "mask"),
    ),
    Case("group-without-task", "the group level without --group-task", 64, "--group-task", args=("--level", "group")),
    Case("bad-plugin-args", "--plugin-args is not JSON", 64, "--plugin-args", args=("--plugin-args", "not json")),
    Case(
        "bad-filter",
        "--bids-filter-file is not JSON",
        64,
        "filter.json",
        lambda b, t: (t / "filter.json").write_text("{") and ["--bids-filter-file", str(t / "filter.json")],
    ),
    Case("device-typo", "--device gpu0", 64, "--device", args=("--device", "gpu0")),
    Case("device-missing", "--device cuda:7 (no such GPU)", 64, "--device", args=("--device", "cuda:7")),
    Case(
        "mask-and-donor",
        "--lesion-mask and --lesion-from together",
        64,
        "--lesion-from",
        lambda b, t: ["--task", "embed", "--lesion-mask", str(b / MASK), "--lesion-from", "sub-01"],
    ),
    Case(
        "other-tools-output",
        "OUTPUT_DIR holds another tool's dataset",
        64,
        "dataset_description.json",
        _other_tools_output,
        output="other",
    ),
    Case(
        "corrupt-output-description",
        "OUTPUT_DIR's dataset_description.json is corrupt",
        64,
        "dataset_description.json",
        _corrupt_output_description,
    ),
    Case("output-is-file", "OUTPUT_DIR is a file", 73, "out", _file_as("out")),
    Case("output-under-file", "OUTPUT_DIR lies under a file", 73, "blocker", _file_as("blocker"), output="blocker/out"),
    Case("output-under-proc", "OUTPUT_DIR cannot be created (/proc)", 73, "/proc", output="/proc/bids_usb_out"),
    Case("work-is-file", "the work directory is a file", 73, "work", _work_is_file),
    Case("model-missing", "--model folder does not exist", 66, "nope", args=("--model", "{tmp}/nope")),
    Case(
        "model-config-corrupt",
        "the model's config.json is not JSON",
        65,
        "config.json",
        _model(lambda m, t: (m / "config.json").write_text("{")),
    ),
    Case(
        "model-weights-missing",
        "the model has no model.safetensors",
        66,
        "model.safetensors",
        _model(lambda m, t: (m / "model.safetensors").unlink()),
    ),
    Case(
        "model-truncated",
        "model.safetensors is truncated",
        65,
        "model.safetensors",
        _model(lambda m, t: (m / "model.safetensors").write_bytes((m / "model.safetensors").read_bytes()[:-64])),
    ),
    Case(
        "model-is-pickle",
        "model.safetensors is a pickle (never unpickled)",
        65,
        "model.safetensors",
        _model(_pickled_weights),
    ),
    Case(
        "model-wrong-shape",
        "a tensor of model.safetensors has the wrong shape",
        65,
        "model.safetensors",
        _model(_wrong_shape),
    ),
    Case("t1w-garbage", "the T1w is not a NIfTI", 65, T1W, _bytes(T1W, lambda b: b"not an image\n" * 10)),
    Case("t1w-truncated", "the T1w is truncated", 65, T1W, _bytes(T1W, lambda b: b[: len(b) // 2])),
    Case("t1w-4d", "the T1w is 4D", 65, T1W, _write(T1W, lambda: np.stack([_head()] * 3, -1))),
    Case("t1w-2d", "the T1w is 2D", 65, T1W, _write(T1W, lambda: _head()[:, :, 10])),
    Case(
        "t1w-single-slice",
        "the T1w is a single slice (2D mask too)",
        65,
        T1W,
        lambda b, t: (
            _write(T1W, lambda: _head()[:, :, 10:11])(b, t) or _write(MASK, lambda: _lesion()[:, :, 10:11])(b, t)
        ),
    ),
    Case(
        "t1w-single-slice-3d-mask",
        "a single-slice T1w with a 3D mask is blamed on the T1w",
        65,
        T1W,
        _write(T1W, lambda: _head()[:, :, 10:11]),
    ),
    Case("t1w-nan", "the T1w has NaN voxels", 65, T1W, _write(T1W, _nan)),
    Case("t1w-empty", "the T1w is all zeros", 65, T1W, _write(T1W, lambda: np.zeros(SHAPE, np.int16))),
    Case(
        "t1w-tiny",
        "the T1w is 8 x 8 x 8 voxels",
        65,
        T1W,
        lambda b, t: (
            _write(T1W, lambda: np.full((8, 8, 8), 300, np.int16), affine=np.eye(4))(b, t) or _remove(MASK)(b, t)
        ),
    ),
    Case("t1w-voxel-size", "the T1w has 0.01 mm voxels", 65, T1W, _write(T1W, affine=np.diag([0.01, 0.01, 0.01, 1.0]))),
    Case("t1w-no-orientation", "the T1w's qform and sform codes are 0", 65, T1W, _write(T1W, codes=(0, 0))),
    Case("t1w-singular", "the T1w's affine is singular", 65, T1W, _singular),
    Case("t1w-sheared", "the T1w's affine is sheared", 65, T1W, _write(T1W, affine=_shear())),
    Case(
        "mask-other-space",
        "the lesion mask lies outside the head (another space)",
        65,
        MASK,
        _write(MASK, _lesion, affine=_far_away()),
    ),
    Case("mask-whole-head", "the lesion mask covers the whole head", 65, MASK, _write(MASK, _whole_head)),
    Case("mask-nan", "the lesion mask has NaN voxels", 65, MASK, _write(MASK, _nan)),
    Case(
        "mask-no-orientation",
        "the lesion mask's qform and sform codes are 0",
        65,
        MASK,
        _write(MASK, _lesion, codes=(0, 0)),
    ),
    Case(
        "embed-without-mask",
        "embed without any lesion mask",
        65,
        T1W,
        lambda b, t: _remove(MASK)(b, t) or ["--task", "embed"],
    ),
    Case(
        "heal-mode-mask-without-mask",
        "--heal-mode mask on an image without a mask",
        66,
        T1W,
        lambda b, t: _remove(MASK)(b, t) or ["--heal-mode", "mask"],
    ),
    Case(
        "t1w-broken-link",
        "the T1w is a symlink to a file that does not exist",
        66,
        T1W,
        _link(T1W, lambda b, t: str(t / "store" / "gone.nii.gz")),
        validate=True,
    ),
    Case(
        "t1w-annex-absent",
        "the T1w is an annexed file not yet fetched (DataLad, `datalad get`)",
        66,
        "datalad get",
        _link(T1W, _annex_target),
        validate=True,
    ),
    Case("t1w-inf-slope", "the T1w's scl_slope is inf", 65, T1W, _scaled(float("inf"), 0.0)),
    Case("t1w-inf-inter", "the T1w's scl_inter is inf", 65, T1W, _scaled(1.0, float("inf"))),
    Case("t1w-slope-overflow", "the T1w's scl_slope (1e38) overflows float32", 65, T1W, _scaled(1e38, 0.0)),
    Case(
        "mask-flipped-header",
        "the lesion mask has the T1w's grid, its header flipped to LPS",
        65,
        MASK,
        _write(MASK, _lesion, affine=_flipped_lps()),
    ),
    Case(
        "lesion-filter-empty",
        "a `lesion` entry in --bids-filter-file that matches no mask",
        18,
        "lesion",
        _filter_file({"lesion": {"desc": "nosuchmask"}}),
    ),
    Case("steps-zero", "--steps 0", 64, "--steps", args=("--steps", "0")),
    Case("t-start-zero", "--t-start 0", 64, "--t-start", args=("--t-start", "0")),
    Case("t-start-beyond", "--t-start beyond the model's schedule", 64, "--t-start", args=("--t-start", "100000")),
    Case("nprocs-negative", "--nprocs -2", 64, "--nprocs", args=("--nprocs", "-2")),
    Case("work-dir-in-use", "another run holds the participant on the work directory", 73, "work", _work_dir_in_use),
]


def _checksums(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def base(tmp_path_factory, tiny_checkpoint):
    _TINY[:] = [tiny_checkpoint]
    return make_dataset(tmp_path_factory.mktemp("bad") / "bids")


def _argv(case: Case, bids: Path, tmp: Path, extra: list[str], model: Path) -> list[str]:
    fill = {"bids": str(bids), "tmp": str(tmp)}
    args = [a.format(**fill) for a in case.args]
    level = "participant"
    if "--level" in args:
        i = args.index("--level")
        level = args[i + 1]
        del args[i : i + 2]
    positional = str(bids)
    if args and not args[0].startswith("-"):
        positional = args.pop(0)
    output = case.output.format(**fill)
    output = output if output.startswith("/") else str(tmp / output)
    argv = [positional, output, level, "--model", str(model), "--nprocs", "1"]
    if not case.validate:
        argv.append("--skip-bids-validation")
    return argv + args + extra  # a later --model (a damaged copy) wins over the tiny one


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, base: Path, tmp_path: Path, tiny_checkpoint, capsys):
    if case.id == "device-missing" and _cuda_devices() > 7:
        pytest.skip("this machine has a cuda:7")
    if case.output.startswith("/proc") and not Path("/proc").is_dir():
        pytest.skip("no /proc here")
    bids = tmp_path / "bids"
    shutil.copytree(base, bids)
    extra = case.damage(bids, tmp_path) if case.damage else []
    before = _checksums(bids)
    outputs_before = {p.name for p in tmp_path.iterdir()}

    try:
        code = main(_argv(case, bids, tmp_path, list(extra or []), tiny_checkpoint))
    finally:
        while _HELD:
            _HELD.pop().release()

    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == case.exit, captured.err
    assert lines and lines[-1].startswith("bids_usb: error: "), captured.err
    assert case.names in lines[-1], lines[-1]
    assert captured.out == "", "stdout is for report paths only"
    assert _checksums(bids) == before, "the input dataset was changed"
    assert {p.name for p in tmp_path.iterdir()} == outputs_before, "a refused run left files or folders behind"
    assert not (tmp_path / "UNPICKLED").exists(), "a pickle was unpickled"


def _cuda_devices() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def test_the_base_dataset_passes_every_check(base, tmp_path, tiny_checkpoint):
    """The cases above fail because of their damage, not because the base dataset is bad."""
    from bids_usb.inputs import prepare_inputs

    prepared = prepare_inputs(base / T1W, base / MASK, "heal")
    assert prepared.lesion is not None and int(np.asanyarray(prepared.lesion.dataobj).sum()) == 27


def test_assume_orientation_reads_an_image_without_codes(base, tmp_path):
    """The documented way out for qform/sform codes 0: the user says which matrix to trust."""
    from bids_usb.errors import DataError
    from bids_usb.inputs import prepare_inputs

    bids = tmp_path / "bids"
    shutil.copytree(base, bids)
    affine = np.diag([-VOXEL, VOXEL, VOXEL, 1.0])
    img = nib.Nifti1Image(_head(), affine)
    img.set_sform(affine, code=0)
    img.set_qform(affine, code=0)
    nib.save(img, str(bids / T1W))
    mask = nib.Nifti1Image(_lesion(), affine)
    mask.set_sform(affine, code=0)
    mask.set_qform(affine, code=0)
    nib.save(mask, str(bids / MASK))
    with pytest.raises(DataError, match="--assume-orientation"):
        prepare_inputs(bids / T1W, bids / MASK, "heal")
    prepared = prepare_inputs(bids / T1W, bids / MASK, "heal", orientation="sform")
    assert np.allclose(prepared.anat.affine, affine)  # the stored matrix, x flipped as written
    assert int(prepared.anat.header["sform_code"]) > 0
    # nibabel's fallback for codes 0 is a different (centred, LAS) affine: "voxel" gives that one.
    voxel = prepare_inputs(bids / T1W, bids / MASK, "heal", orientation="voxel")
    assert not np.allclose(voxel.anat.affine, affine)


def test_mask_orientation_settles_a_mask_whose_header_contradicts_its_image(base, tmp_path):
    """The refused flipped mask, read both ways the flag offers: ``image`` keeps its voxels on the
    image's grid (the lesion where it was drawn); ``header`` places it by its own header, mirrored."""
    from bids_usb.errors import DataError
    from bids_usb.inputs import prepare_inputs

    bids = tmp_path / "bids"
    shutil.copytree(base, bids)
    lesion = np.zeros(SHAPE, np.uint8)
    lesion[5:8, 9:12, 8:11] = 1  # off the x centre, so that a mirror moves it
    _save(lesion, bids / MASK, affine=_flipped_lps())
    with pytest.raises(DataError, match="--mask-orientation"):
        prepare_inputs(bids / T1W, bids / MASK, "heal")
    on_image = np.asanyarray(prepare_inputs(bids / T1W, bids / MASK, "heal", mask_orientation="image").lesion.dataobj)
    assert np.array_equal(on_image, lesion)
    by_header = np.asanyarray(prepare_inputs(bids / T1W, bids / MASK, "heal", mask_orientation="header").lesion.dataobj)
    assert np.array_equal(by_header, lesion[::-1, ::-1, :])


def test_there_are_at_least_thirty_cases():
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)


def doc_table() -> str:
    rows = ["| Case | Exit | The last line names |", "| --- | --- | --- |"]
    for case in CASES:
        rows.append(f"| {case.what} | {case.exit} | `{case.names}` |")
    return "\n".join([BEGIN, *rows, END])


def test_troubleshooting_lists_the_table():
    text = DOC.read_text()
    assert BEGIN in text and END in text, f"{DOC} lacks the generated table; run python tests/test_bad_inputs.py"
    current = text[text.index(BEGIN) : text.index(END) + len(END)]
    assert current == doc_table(), f"{DOC}'s table is stale; run python tests/test_bad_inputs.py"


if __name__ == "__main__":  # regenerate the table in docs/troubleshooting.md
    text = DOC.read_text()
    table = doc_table()
    if BEGIN in text:
        text = text[: text.index(BEGIN)] + table + text[text.index(END) + len(END) :]
    else:
        text = (
            text.rstrip("\n") + "\n\n## Checked cases\n\nEach row is a case of `tests/test_bad_inputs.py`, "
            "run in CI: the exit code, and what the last line of stderr names.\n\n" + table + "\n"
        )
    DOC.write_text(text)
    sys.exit(0)
