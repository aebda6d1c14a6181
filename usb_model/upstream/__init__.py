"""Importing the authors' published USB weights (``usb-import-upstream``).

- ``pickles``: reading their ``.pth`` and Lightning ``.ckpt`` files without running them;
- ``layout``: their state-dict layouts, read into shapes and mapped onto MONAI's networks;
- ``convert``: the three files -> a bids_usb checkpoint with its model card;
- ``cli``: the command.
"""

from .convert import import_upstream
from .pickles import UpstreamError

__all__ = ["import_upstream", "UpstreamError"]
