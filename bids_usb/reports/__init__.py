"""Visual reports: one self-contained HTML page per participant (``sub-<label>.html``) with its
figures under ``sub-<label>/figures/``.

``figures`` draws the mosaics (matplotlib, Agg canvas, PNG) and ``participant`` writes the page:
before / after / difference mosaics through the edit, the registration check on the model grid,
the uncertainty map, parameters, model, timings, warnings and a methods paragraph.
"""

from .participant import ImageReport, write_participant_report

__all__ = ["ImageReport", "write_participant_report"]
