"""The participant HTML report: sections, figures, atomic writes, orientation handling."""

from __future__ import annotations

import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_usb.reports import ImageReport, write_participant_report
from bids_usb.reports import figures as F
from bids_usb.reports import participant as P

PARAMS = {
    "t_start": 300,
    "stride": 2,
    "alpha0": 20.0,
    "k": 0.5,
    "ddim_eta": 0.0,
    "acg": True,
    "seed": 7,
    "n_samples": 3,
}
TIMINGS = {
    "prepare": 1.5,
    "bias_correct": 12.25,
    "skull_strip": 4.0,
    "register": 9.0,
    "to_model_grid": 0.5,
    "usb": 95.0,
    "to_native": 2.0,
    "derivatives": 0.75,
}
MODEL = {"Name": "demo", "SHA256": "0123456789abcdef" * 4, "Contrast": "T1w"}

# A native grid stored S-L-P with 5 mm slices: canonical RAS is (40, 48, 12) at 1 x 1 x 5 mm.
ANISO_AFFINE = np.array([[0, -1.0, 0, 20], [0, 0, -1.0, 24], [5.0, 0, 0, -30], [0, 0, 0, 1]])


def _brain(shape, zooms, centre=None):
    """A bright ellipsoid 'brain' with a darker shell ('grey matter') in RAS voxel order."""
    grid = np.indices(shape).astype(np.float32)
    centre = np.array(centre if centre is not None else [(n - 1) / 2 for n in shape], dtype=np.float32)
    radii = np.array([0.4 * n * z for n, z in zip(shape, zooms)], dtype=np.float32)
    r = np.sqrt(sum(((grid[i] - centre[i]) * zooms[i] / radii[i]) ** 2 for i in range(3)))
    img = np.where(r < 1, 600.0, 0.0) + np.where(r < 0.75, 200.0, 0.0)
    return img.astype(np.float32), r < 1


def _save(data, affine, path, dtype=np.float32):
    nib.save(nib.Nifti1Image(np.asarray(data).astype(dtype), affine), str(path))
    return str(path)


def _to_file_order(ras: np.ndarray) -> np.ndarray:
    """RAS (40, 48, 12) -> the S-L-P storage order of ANISO_AFFINE."""
    return np.ascontiguousarray(ras[::-1, ::-1, :].transpose(2, 0, 1))


def _image(
    tmp: Path, name: str, *, aniso: bool, lesion: bool, uncertainty: bool, task: str = "heal", n_samples: int = 3
) -> ImageReport:
    tmp.mkdir(parents=True, exist_ok=True)
    if aniso:
        shape, zooms = (40, 48, 12), (1.0, 1.0, 5.0)
        affine = ANISO_AFFINE
        to_file = _to_file_order
    else:
        shape, zooms = (40, 48, 40), (1.0, 1.0, 1.0)
        affine = np.diag([1.0, 1.0, 1.0, 1.0])
        affine[:3, 3] = [-20, -24, -20]
        to_file = np.asarray
    anat, brain = _brain(shape, zooms)
    grid = np.indices(shape)
    les = ((grid[0] - 26) ** 2 + (grid[1] - 20) ** 2 + ((grid[2] - shape[2] // 2) * zooms[2]) ** 2) < 25
    region = ((grid[0] - 26) ** 2 + (grid[1] - 20) ** 2 + ((grid[2] - shape[2] // 2) * zooms[2]) ** 2) < 64
    anat_in = np.where(les, 150.0, anat)
    edited = np.where(region, anat + 5.0 * np.sin(grid[0]), anat_in)
    files = {
        "anat": _save(to_file(anat_in), affine, tmp / f"{name}.nii.gz"),
        "edited": _save(to_file(edited), affine, tmp / "edited.nii.gz"),
        "edit_region": _save(to_file(region), affine, tmp / "editregion.nii.gz", np.uint8),
        "brain_mask": _save(to_file(brain), affine, tmp / "brain.nii.gz", np.uint8),
        "preproc": _save(to_file(anat_in), affine, tmp / "preproc.nii.gz"),
    }
    if lesion:
        files["lesion"] = _save(to_file(les), affine, tmp / "lesion.nii.gz", np.uint8)
    if uncertainty:
        files["uncertainty"] = _save(to_file(np.where(region, 10.0 + grid[1], 0.0)), affine, tmp / "uncertainty.nii.gz")
    # model grid: 2 mm RAS, the template and a slightly shifted input
    m_shape, m_aff = (32, 40, 32), np.diag([2.0, 2.0, 2.0, 1.0])
    m_aff[:3, 3] = [-31, -39, -31]
    template, _ = _brain(m_shape, (2.0, 2.0, 2.0))
    moved, _ = _brain(m_shape, (2.0, 2.0, 2.0), centre=[16.5, 19.0, 15.5])
    files["preproc_model"] = _save(
        moved / 800.0, m_aff, tmp / f"{name.replace('_T1w', '')}_space-USBdemo_res-2_desc-preproc_T1w.nii.gz"
    )
    files["edited_model"] = _save(moved / 800.0, m_aff, tmp / "edited_model.nii.gz")
    if lesion:
        files["lesion_model"] = _save(np.zeros(m_shape), m_aff, tmp / "lesion_model.nii.gz", np.uint8)
    (tmp / "xfm.mat").write_text("not a real transform")
    files["transform"] = str(tmp / "xfm.mat")
    tpl = Path(_save(template / 800.0, m_aff, tmp / "template.nii.gz"))
    anat_path = Path(files.pop("anat"))
    return ImageReport(
        name=name,
        anat=anat_path,
        written=files,
        template=tpl,
        task=task,
        parameters={**PARAMS, "n_samples": n_samples},
        timings=dict(TIMINGS),
        model=dict(MODEL),
        warnings=["N4 did not converge <fully>"] if lesion else [],
    )


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    a = _image(tmp / "a", "sub-01_ses-1_T1w", aniso=False, lesion=True, uncertainty=True)
    b = _image(tmp / "b", "sub-01_ses-2_T1w", aniso=True, lesion=False, uncertainty=False, n_samples=1)
    out = tmp / "derivatives"
    path = write_participant_report(out, "01", [a, b], "0.1.0")
    return path, out, (a, b)


def _srcs(html: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', html)


def test_report_written_with_every_section(report):
    path, out, (a, b) = report
    assert path == out / "sub-01.html" and path.is_file()
    html = path.read_text(encoding="utf-8")
    for anchor in ("edit", "registration", "uncertainty", "parameters", "model", "timings", "warnings", "outputs"):
        assert f'id="{a.name}-{anchor}"' in html and f'id="{b.name}-{anchor}"' in html
    for section in ('id="methods"', 'id="about"', "<h2>Summary</h2>", "References"):
        assert section in html
    assert 'class="error"' not in html  # every figure rendered


def test_figures_exist_and_are_bids_like(report):
    path, out, _ = report
    srcs = _srcs(path.read_text(encoding="utf-8"))
    # a: edit, registration, uncertainty; b: edit, registration (no uncertainty)
    assert len(srcs) == 5
    names = set()
    for src in srcs:
        assert not src.startswith("/") and src.startswith("sub-01/figures/")
        fig = out / src
        assert fig.is_file() and fig.stat().st_size > 1000
        assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        names.add(fig.name)
    assert {
        "sub-01_ses-1_desc-edit_T1w.png",
        "sub-01_ses-1_desc-uncertainty_T1w.png",
        "sub-01_ses-2_desc-edit_T1w.png",
        "sub-01_ses-1_space-USBdemo_desc-registration_T1w.png",
        "sub-01_ses-2_space-USBdemo_desc-registration_T1w.png",
    } == names


def test_parameters_timings_model_and_warnings(report):
    path, _, _ = report
    html = path.read_text(encoding="utf-8")
    for key, _value in PARAMS.items():
        assert f"<code>{key}</code>" in html
    assert "<td>300</td>" in html and "<td>20</td>" in html
    assert "1 min 35 s" in html  # usb: 95 s
    total = sum(TIMINGS.values())  # 125 s
    assert (
        P._duration(total) == "2 min 05 s"
        and '<tr class="total"><td>total</td><td></td><td class="num">2 min 05 s</td>' in html
    )
    assert "0123456789ab…" in html and "demo" in html
    assert "N4 did not converge &lt;fully&gt;" in html  # escaped
    assert "No warnings." not in html.split('id="sub-01_ses-1_T1w-warnings"')[1].split("</section>")[0]
    assert "No warnings." in html.split('id="sub-01_ses-2_T1w-warnings"')[1].split("</section>")[0]
    assert "No uncertainty map" in html  # image b: one sample


def test_methods_paragraph(report):
    path, _, _ = report
    html = path.read_text(encoding="utf-8")
    methods = html.split('id="methods"')[1].split('id="about"')[0]
    for needle in (
        "bids_usb 0.1.0",
        "healed",
        "diffusion step 300",
        "151 steps",
        "stride 2",
        "α₀ = 20",
        "k = 0.5",
        "η = 0",
        "random seed 7",
        "3 samples",
        "&quot;demo&quot;",
        "not be used for clinical",
        "Wang &amp; Liu",
        "Tustison et al., 2010",
        "Fisch et al., 2024",
        "Gorgolewski et al., 2011",
        "Avants et al., 2011",
    ):
        assert needle in methods, needle
    # the two images differ (lesion / samples), so each gets its own paragraph, labelled
    assert methods.count('<p class="methods">') == 2 and "sub-01_ses-2_T1w:" in methods


def test_methods_embed_and_versions():
    image = ImageReport(
        "sub-02_T1w",
        Path("sub-02_T1w.nii.gz"),
        {"lesion": "x"},
        Path("t.nii.gz"),
        "embed",
        {
            "t_start": 500,
            "stride": 1,
            "alpha0": 10.0,
            "k": 1.0,
            "ddim_eta": 0.5,
            "acg": True,
            "lcg": True,
            "lcg_eta": 2.0,
            "seed": 3,
            "n_samples": 1,
        },
        {},
        {"Name": "usb-brats", "SHA256": "f" * 64},
        [],
    )
    versions = {"nipype": "1.0", "ANTsPy": "0.6", "deepbet": "1.0.2", "PyTorch": "2.13.0", "MONAI": None}
    text = P.methods_paragraph(image, "9.9", versions)
    assert "embedded" in text and "Lesion Consistency Guidance (LCG; η = 2)" in text and "diffusion step 500" in text
    assert "501 steps" in text and "η = 0.5" in text and "One sample was drawn with random seed 3" in text
    assert "demonstration" not in text and "MONAI" not in text and "deepbet 1.0.2" in text
    assert P.methods_paragraph(image, "9.9", versions, plural=True).startswith("Each T1-weighted image")
    found = P.software_versions("9.9")
    assert found["bids_usb"] == "9.9" and set(found) >= {"nipype", "ANTsPy", "deepbet", "PyTorch", "MONAI"}


def test_no_temporary_files_left(report):
    _, out, _ = report
    leftovers = [p for p in out.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]
    assert leftovers == []


def test_failed_write_keeps_previous_report(tmp_path, monkeypatch):
    image = _image(tmp_path / "in", "sub-03_T1w", aniso=False, lesion=False, uncertainty=False, n_samples=1)
    out = tmp_path / "out"
    path = write_participant_report(out, "sub-03", [image], "0.1.0")  # "sub-" prefix accepted
    assert path.name == "sub-03.html"
    before = path.read_bytes()

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(P.os, "replace", boom)
    with pytest.raises(OSError):
        P._write_atomic(path, "<html>new</html>")
    assert path.read_bytes() == before
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


def test_broken_figure_becomes_an_error_box(tmp_path):
    image = _image(tmp_path / "in", "sub-04_T1w", aniso=False, lesion=True, uncertainty=False, n_samples=1)
    _save(np.zeros((10, 10, 10)), np.eye(4), image.template)  # template on another grid
    path = write_participant_report(tmp_path / "out", "04", [image], "0.1.0")
    html = path.read_text(encoding="utf-8")
    assert html.count('class="error"') == 1 and "registration figure could not be drawn" in html
    assert len(_srcs(html)) == 1  # the edit figure still rendered


def test_orientation_does_not_change_the_figure(tmp_path):
    """The same image stored RAS or S-L-P (anisotropic) draws the same pixels."""
    shape, zooms = (40, 48, 12), (1.0, 1.0, 5.0)
    anat, brain = _brain(shape, zooms)
    grid = np.indices(shape)
    region = ((grid[0] - 26) ** 2 + (grid[1] - 20) ** 2 + ((grid[2] - 6) * 5) ** 2) < 64
    edited = np.where(region, anat * 0.5, anat)
    ras_affine = nib.as_closest_canonical(nib.Nifti1Image(_to_file_order(anat), ANISO_AFFINE)).affine
    pngs = []
    for kind, affine, order in (("ras", ras_affine, np.asarray), ("slp", ANISO_AFFINE, _to_file_order)):
        d = tmp_path / kind
        d.mkdir()
        written = {
            "edited": _save(order(edited), affine, d / "e.nii.gz"),
            "edit_region": _save(order(region), affine, d / "r.nii.gz", np.uint8),
            "brain_mask": _save(order(brain), affine, d / "b.nii.gz", np.uint8),
        }
        data = F.load_edit_data(_save(order(anat), affine, d / "a.nii.gz"), written)
        assert data.anat.shape == shape and data.anat.zooms == zooms
        pngs.append(F.edit_figure(data, d / "edit.png").read_bytes())
    assert pngs[0] == pngs[1]


def test_anisotropic_panels_keep_their_shape():
    box = (slice(0, 40), slice(0, 48), slice(0, 12))
    zooms = (1.0, 1.0, 5.0)
    assert F.panel_extent(2, box, zooms) == (0.0, 40.0, 0.0, 48.0)  # axial: 40 x 48 mm
    assert F.panel_extent(1, box, zooms) == (0.0, 40.0, 0.0, 60.0)  # coronal: 12 slices x 5 mm high
    assert F.panel_extent(0, box, zooms) == (0.0, 48.0, 0.0, 60.0)


def test_slices_follow_the_mask():
    mask = np.zeros((40, 48, 40), bool)
    mask[25:31, 10:30, 18:21] = True
    for axis in range(3):
        picks = F.pick_slices(mask, axis, (1.0, 1.0, 1.0))
        assert len(picks) == F.N_SLICES and picks == sorted(picks)
        hits = [mask.take(i, axis=axis).any() for i in picks]
        assert hits[len(hits) // 2]  # the middle slice goes through the mask
        if axis == 1:  # a 20-voxel extent: every slice goes through it
            assert all(hits)
    empty = F.pick_slices(np.zeros((20, 20, 20), bool), 2, (1.0, 1.0, 1.0))
    assert len(empty) == F.N_SLICES and all(0 <= i < 20 for i in empty)


def test_methods_say_where_the_lesion_comes_from():
    """With --fill-residual (the default) the lesion is the fill plus the model's change, not the decoded heal."""
    versions = {"nipype": "1.0", "ANTsPy": "0.6", "deepbet": "1.0.2", "PyTorch": "2.13.0", "MONAI": "1.6"}

    def text(fill_residual: bool) -> str:
        params = {"mode": "mask", "fill": "auto", "t_start": 100, "stride": 3, "seed": 0, "n_samples": 1}
        image = ImageReport(
            "sub-01_T1w",
            Path("sub-01_T1w.nii.gz"),
            {"lesion": "x"},
            Path("t.nii.gz"),
            "heal",
            {**params, "fill_residual": fill_residual},
            {},
            {"Name": "demo", "SHA256": "a" * 64},
            [],
        )
        return P.methods_paragraph(image, "9.9", versions)

    assert "plus the model's change to it" in text(True) and "decoded healed brain was used" not in text(True)
    assert "decoded healed brain was used" in text(False) and "the model's change to it" not in text(False)
