"""The participant graph for each combination of options, built but not run (as fMRIPrep's
``workflows/tests/test_base.py`` does): the nodes an option adds are there, every image feeds
its participant's report node, and the donor of ``--lesion-from`` feeds the images."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from bids_usb.model import ModelBundle
from bids_usb.workflows.participant import ImageJob, RunSettings, init_participant_wf


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("graphs")
    out = {}
    for sub in ("01", "02"):
        anat = root / f"sub-{sub}_T1w.nii.gz"
        nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4)), anat)
        mask = root / f"sub-{sub}_label-lesion_roi.nii.gz"
        nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.uint8), np.eye(4)), mask)
        out[sub] = (anat, mask)
    template_mask = root / "space-MNI152NLin2009aSym_mask.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.uint8), np.eye(4)), template_mask)
    out["template_mask"] = template_mask
    out["root"] = root
    return out


def _graph(wf):
    flat = wf._create_flat_graph()  # nipype's own expansion of nested workflows
    names = {n.fullname for n in flat.nodes()}
    edges = {(a.fullname, b.fullname) for a, b in flat.edges()}
    return names, edges


# Healing takes a native mask or none; embedding takes a native mask, a template-space mask or a
# donor (--lesion-from); the run refuses the other combinations before any graph is built.
LESIONS = {"heal": ("mask", "none"), "embed": ("mask", "template", "donor")}
CASES = [(task, lesion, n) for task, lesions in LESIONS.items() for lesion in lesions for n in (1, 3)]


def _expected_roles(task, lesion, n_samples):
    roles = {"edited", "edit_region", "brain_mask", "preproc", "transform", "preproc_model", "edited_model"}
    roles |= {"anomaly", "detected"} if lesion == "none" else {"lesion", "lesion_model"}
    return roles | ({"uncertainty"} if n_samples > 1 else set())


@pytest.mark.parametrize("task,lesion,n_samples", CASES, ids=[f"{t}-{lesion}-n{n}" for t, lesion, n in CASES])
def test_participant_graph(files, tiny_checkpoint, task, lesion, n_samples):
    bundle = ModelBundle.open(tiny_checkpoint)
    jobs, donor = [], None
    for sub in ("01", "02"):
        anat, mask = files[sub]
        job = ImageJob(anat=anat, entities={"subject": sub})
        if lesion == "mask":
            job.lesion_mask = mask
        elif lesion == "template":
            job.template_lesion = files["template_mask"]
        elif lesion == "donor":
            job.lesion_from = files["01"][0]
        jobs.append(job)
    if lesion == "donor":
        donor = ImageJob(anat=files["01"][0], entities={"subject": "01"}, lesion_mask=files["01"][1])
    settings = RunSettings(task=task, n_samples=n_samples)
    root = files["root"]
    wf = init_participant_wf(jobs, bundle, settings, root, root / "out", root / "work", donor=donor)
    names, edges = _graph(wf)
    for job in jobs:
        prefix = f"bids_usb_wf.image_{job.name}_wf."
        for node in ("prepare", "bias_correct", "skull_strip", "register", "to_model_grid", "usb", "to_native"):
            assert prefix + node in names
            assert (prefix + node, prefix + "summary") in edges, f"{node}'s time must reach the report"
        # One sink per output, each feeding the report through the "written" merge.
        roles = {n[len(prefix + "ds_") :] for n in names if n.startswith(prefix + "ds_")}
        assert roles == _expected_roles(task, lesion, n_samples)
        for role in roles:
            assert (prefix + f"ds_{role}", prefix + "written") in edges
        assert (prefix + "written", prefix + "summary") in edges
        subject = job.entities["subject"]
        assert (prefix + "summary", f"bids_usb_wf.summaries_sub_{subject}") in edges
        assert (f"bids_usb_wf.summaries_sub_{subject}", f"bids_usb_wf.report_sub_{subject}") in edges
        assert (prefix + "template_lesion" in names) == (lesion == "template")
        if task == "heal":  # the native fill reads a head's brain, not its scalp
            assert (prefix + "skull_strip", prefix + "to_native") in edges
        if lesion == "donor":
            donor_out = f"bids_usb_wf.donor_{donor.name}_wf.outputnode"
            assert (donor_out, prefix + "donor_input") in edges and (prefix + "donor_input", prefix + "usb") in edges, (
                "the donor's lesion must reach the sampler"
            )
    assert any(n.startswith("bids_usb_wf.donor_") for n in names) == (lesion == "donor")
    usb = [n for n in wf._create_flat_graph().nodes() if n.fullname.endswith(".usb")]
    assert all(n.inputs.n_samples == n_samples and n.inputs.task == task for n in usb)


def test_a_model_changed_in_place_is_not_served_from_the_work_directory(files, tiny_checkpoint, tmp_path):
    """nipype hashes a directory input by its path: the model nodes also take the model's
    fingerprint (weights and config), so a new config at the same path gives new node hashes."""
    import json
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_checkpoint, model)
    anat, _ = files["01"]

    def usb_hash():
        bundle = ModelBundle.open(model)
        jobs = [ImageJob(anat=anat, entities={"subject": "01"})]
        wf = init_participant_wf(jobs, bundle, RunSettings(task="heal"), files["root"], tmp_path / "o", tmp_path / "w")
        node = wf.get_node(f"image_{jobs[0].name}_wf").get_node("usb")
        return bundle.fingerprint, node.inputs.model_fingerprint, node.inputs.get_hashval()[1]

    before = usb_hash()
    assert before[0] == before[1]
    config = json.loads((model / "config.json").read_text())
    config["sampling"]["detect_threshold"] = config["sampling"]["detect_threshold"] + 0.05
    (model / "config.json").write_text(json.dumps(config))
    after = usb_hash()
    assert after[0] != before[0] and after[2] != before[2]
