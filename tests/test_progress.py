"""The per-node progress lines: a time for every node, never a negative one."""

from __future__ import annotations

import logging
import re

import nipype.pipeline.engine as pe
from nipype.interfaces.utility import Function

from bids_usb.progress import NodeProgress, count_nodes


def _sleep(x):
    import time

    time.sleep(0.2)
    return x


def _workflow(base_dir):
    wf = pe.Workflow("w", base_dir=str(base_dir))
    work = pe.Node(Function(input_names=["x"], output_names=["x"], function=_sleep), name="work")
    work.inputs.x = 1
    # A sink is run on nipype's master thread: its callback gets "end" without "start".
    sink = pe.Node(
        Function(input_names=["x"], output_names=["x"], function=_sleep), name="sink", run_without_submitting=True
    )
    wf.connect(work, "x", sink, "x")
    return wf


def _run(wf):
    wf.run(plugin="MultiProc", plugin_args={"n_procs": 1, "status_callback": NodeProgress(count_nodes(wf))})


def test_master_thread_nodes_report_their_own_time_and_cached_nodes_say_so(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="bids_usb.progress")
    _run(_workflow(tmp_path))
    lines = [r.getMessage() for r in caplog.records if r.name == "bids_usb.progress"]
    assert len(lines) == 2 and not any("-0.0" in line for line in lines), lines
    took = {m.group(1): float(m.group(2)) for m in (re.search(r"(\w+) done \(([-\d.]+) s\)", x) for x in lines) if m}
    assert set(took) == {"work", "sink"} and took["sink"] >= 0.1, lines  # the sink slept 0.2 s

    caplog.clear()
    _run(_workflow(tmp_path))  # the same graph again: everything comes from the cache
    lines = [r.getMessage() for r in caplog.records if r.name == "bids_usb.progress"]
    assert len(lines) == 2 and all(line.endswith("cached") for line in lines), lines
