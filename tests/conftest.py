import os

import pytest
import torch

# The suite runs on 2 CPU cores; more threads than cores only adds contention.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
# ITK as the app runs it (bids_usb.preprocessing.register_to_template): one thread. ITK fixes
# its thread count at its first use in a process, and with more than one the same seeded affine
# fit differs from run to run (on the tests' blob: brain overlap 0.94, 0.67, 0.82 in three runs).
os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")


@pytest.fixture(scope="session")
def tiny_cfg():
    from usb_model.config import load_preset

    return load_preset("tiny")


@pytest.fixture()
def tiny_networks(tiny_cfg):
    from usb_model.networks import USBNetworks

    torch.manual_seed(0)
    return USBNetworks(tiny_cfg).eval()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_cfg):
    """An untrained tiny model with its template: enough for the app's mechanics."""
    from usb_model.checkpoint import save_checkpoint
    from usb_model.networks import USBNetworks
    from usb_model.template import load_template

    torch.manual_seed(0)
    template = load_template(tiny_cfg.grid)
    path = tmp_path_factory.mktemp("models") / "tiny"
    save_checkpoint(
        USBNetworks(tiny_cfg),
        path,
        template={"t1w": template.t1w, "brain_mask": template.brain_mask, "affine": template.affine},
        training_data={"note": "untrained, for tests"},
    )
    return path
