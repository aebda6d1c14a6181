"""What every step of the participant workflow reports besides its files: its own wall time.

The report shows how long each step took. Rather than reading nipype's result files after the
run (scraping the executed graph by node name), each step hands its time on as an ordinary
output, ``seconds``, which the workflow connects to the report node like any other output.
"""

from __future__ import annotations

import functools
import time

from nipype.interfaces.base import SimpleInterface, TraitedSpec, traits


class TimedOutputSpec(TraitedSpec):
    seconds = traits.Float(desc="wall time of this step (s), for the report")


class TimedInterface(SimpleInterface):
    """A ``SimpleInterface`` whose ``_run_interface`` also sets the output ``seconds``; its
    output spec must derive from :class:`TimedOutputSpec`."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        inner = cls.__dict__.get("_run_interface")
        if inner is None:
            return

        @functools.wraps(inner)
        def timed(self, runtime):
            started = time.perf_counter()
            runtime = inner(self, runtime)
            self._results["seconds"] = time.perf_counter() - started
            return runtime

        cls._run_interface = timed
