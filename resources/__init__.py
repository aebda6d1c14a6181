"""The project's data files, at the top of the repository: the model presets (``configs/``),
the bundled demo checkpoint and its card (``models/``), and the Boutiques descriptor.

Installed as the package ``bids_usb_resources`` (pyproject.toml maps it onto this folder), so
that a wheel, an editable install and the container find the same files the same way: through
this package's location, never through a path relative to the source tree.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent
CONFIGS = ROOT / "configs"
MODELS = ROOT / "models"
BOUTIQUES = ROOT / "boutiques.json"
