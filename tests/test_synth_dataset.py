"""TripletDataset: shapes, ranges, healthy items, determinism across workers."""

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from usb_model.config import GridConfig
from usb_model.synth import TripletDataset
from usb_model.template import load_template

GRID = GridConfig(shape=(32, 40, 32), voxel_size=(5.0, 5.0, 5.0))


@pytest.fixture(scope="module")
def ds():
    return TripletDataset(GRID, length=12, seed=3, healthy_fraction=0.25)


def _check_item(item, shape):
    assert set(item) == {"healthy", "lesioned", "mask"}
    for value in item.values():
        assert value.dtype == torch.float32 and value.shape == (1, *shape)
        assert value.min() >= 0 and value.max() <= 1
    assert set(torch.unique(item["mask"]).tolist()) <= {0.0, 1.0}


def test_items_are_triplets(ds):
    n_healthy = 0
    for i in range(len(ds)):
        item = ds[i]
        _check_item(item, GRID.shape)
        mask = item["mask"].bool()
        if not mask.any():
            n_healthy += 1
            assert torch.equal(item["lesioned"], item["healthy"])
            continue
        # the lesion is inside the brain, and the images differ only there
        assert torch.all(item["healthy"][mask] > 0)
        assert torch.equal(item["lesioned"][~mask], item["healthy"][~mask])
        assert not torch.equal(item["lesioned"][mask], item["healthy"][mask])
    assert 1 <= n_healthy <= 8


def test_item_is_a_function_of_seed_and_index(ds):
    again = TripletDataset(GRID, length=12, seed=3, healthy_fraction=0.25)
    for i in (0, 5):
        a, b = ds[i], again[i]
        for key in a:
            assert torch.equal(a[key], b[key])
    assert not torch.equal(ds[0]["healthy"], TripletDataset(GRID, 12, seed=4)[0]["healthy"])
    assert torch.equal(ds[-1]["healthy"], ds[11]["healthy"])
    with pytest.raises(IndexError):
        ds[12]


def test_same_items_in_dataloader_workers(ds):
    load_template(GRID)  # warm the cache before the workers fork
    loader = DataLoader(ds, batch_size=2, num_workers=2, shuffle=False)
    batches = list(loader)
    direct = [ds[i] for i in range(len(ds))]
    for b, batch in enumerate(batches):
        for j in range(batch["healthy"].shape[0]):
            for key in batch:
                assert torch.equal(batch[key][j], direct[2 * b + j][key])


def test_pickles_small(ds):
    clone = pickle.loads(pickle.dumps(ds))
    assert len(pickle.dumps(ds)) < 10_000
    assert torch.equal(clone[2]["lesioned"], ds[2]["lesioned"])


def test_healthy_fraction_extremes():
    all_healthy = TripletDataset(GRID, 4, seed=0, healthy_fraction=1.0)
    for i in range(4):
        item = all_healthy[i]
        assert item["mask"].sum() == 0 and torch.equal(item["lesioned"], item["healthy"])
    none_healthy = TripletDataset(GRID, 4, seed=0, healthy_fraction=0.0, size="medium")
    assert all(none_healthy[i]["mask"].sum() > 0 for i in range(4))


def test_user_images_and_lesion_priors():
    tpl = load_template(GRID)
    scans = [np.array(tpl.t1w) * 900.0, np.array(tpl.t1w) ** 1.2 * 500.0]
    prior = np.zeros(GRID.shape, np.float32)
    prior[10:16, 18:26, 14:20] = 1.0
    prior *= tpl.parenchyma
    ds = TripletDataset(
        GRID, 6, seed=1, healthy_fraction=0.0, images=scans, lesion_masks=[prior], contrast="FLAIR", prior_fraction=1.0
    )
    for i in range(3):
        item = ds[i]
        _check_item(item, GRID.shape)
        mask = item["mask"].bool()
        assert mask.any()
        # FLAIR-like: brighter inside the lesion
        assert item["lesioned"][mask].mean() > item["healthy"][mask].mean()
    with pytest.raises(ValueError):
        TripletDataset(GRID, 2, images=[np.zeros((4, 4, 4))])


def test_invalid_arguments():
    with pytest.raises(ValueError):
        TripletDataset(GRID, 2, contrast="T2w")
    with pytest.raises(ValueError):
        TripletDataset(GRID, 2, healthy_fraction=1.5)
