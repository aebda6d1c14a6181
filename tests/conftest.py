import os

import pytest
import torch

# The suite runs on 2 CPU cores; more threads than cores only adds contention.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny_cfg():
    from usb_model.config import load_preset

    return load_preset("tiny")


@pytest.fixture()
def tiny_networks(tiny_cfg):
    from usb_model.networks import USBNetworks

    torch.manual_seed(0)
    return USBNetworks(tiny_cfg).eval()
