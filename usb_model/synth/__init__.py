"""Training-data synthesis: healthy brains, pseudo-lesions, and (healthy, lesioned, mask) triplets.

Paired pathological/healthy scans hardly exist, so USB (like UNA) trains on healthy brains
into which pseudo-lesions are drawn ("anomaly randomization"). Modules, one job each:

- ``perlin``     Perlin gradient noise (separable; exact derivatives)
- ``flow``       divergence-free random velocity (curl of Perlin potentials), upwind advection
- ``lesions``    random lesion shapes inside a brain, sizes from a distribution
- ``encode``     drawing a lesion into an image (T1w darkening / FLAIR brightening)
- ``spatial``    random affine + elastic transforms;  ``intensity``  random contrast
- ``healthy``    varied healthy brains from the template or a user's scan
- ``dataset``    ``TripletDataset`` for training;  ``native``  placing a brain on a scanner grid
- ``bids_writer`` the ``usb-synth-dataset`` command;  ``figure``  a figure of synthetic pairs
"""

from usb_model.synth.dataset import TripletDataset, synth_triplet
from usb_model.synth.encode import encode_lesion
from usb_model.synth.healthy import SynthBrain, synth_healthy
from usb_model.synth.lesions import SIZE_PRESETS_ML, draw_volume_ml, lesion_volume_ml, random_lesion

__all__ = [
    "SIZE_PRESETS_ML",
    "SynthBrain",
    "TripletDataset",
    "draw_volume_ml",
    "encode_lesion",
    "lesion_volume_ml",
    "random_lesion",
    "synth_healthy",
    "synth_triplet",
]
