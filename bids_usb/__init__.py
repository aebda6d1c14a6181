"""bids_usb: the USB method as a BIDS App (participant and group levels).

The method itself lives in ``usb_model``; this package adds BIDS discovery, the nipype
preprocessing workflow, native-space outputs and reports.
"""

from usb_model import __version__

__all__ = ["__version__"]
