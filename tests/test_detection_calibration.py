"""The detection threshold is the lowest at which healthy brains come back unchanged."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.detection_calibration import clear_threshold, threshold_for  # noqa: E402
from usb_model.detection import detect_lesions  # noqa: E402


def test_the_clear_threshold_ignores_excursions_smaller_than_a_lesion():
    voxel = (3.0, 3.0, 3.0)  # 1 ml = 37 voxels
    anomaly = np.zeros((24, 24, 24), np.float32)
    anomaly[4:8, 4:8, 4:8] = 0.5  # 64 voxels, 1.7 ml: a healthy brain's largest departure
    anomaly[15, 15, 15] = 0.9  # one voxel: far above, but smaller than any lesion detection keeps
    clear = clear_threshold(anomaly, min_ml=1.0, voxel=voxel)
    assert 0.49 <= clear <= 0.505
    assert not detect_lesions(anomaly, clear, 1.0, voxel).any()
    assert detect_lesions(anomaly, clear - 0.01, 1.0, voxel).any()
    assert threshold_for(clear) == 0.56  # 10 % above 0.50x, rounded up
    assert threshold_for(0.157) == 0.18
    # Nothing large enough at all: any threshold leaves it unchanged.
    assert clear_threshold(anomaly * (anomaly > 0.6), min_ml=1.0, voxel=voxel) == 0.0
