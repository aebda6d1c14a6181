"""The bad-input table of tests/test_bad_inputs.py, run through a container image's own CLI.

Three steps, used by scripts/build_container.sh:

    python scripts/container_bad_inputs.py prepare DIR   # on the host, with the test tools
    <container> python /scripts/container_bad_inputs.py run DIR     # inside the image: stdlib only
    python scripts/container_bad_inputs.py check DIR     # on the host again

``prepare`` makes one damaged copy of the small dataset per case (the table's own ``CASES``, its
``make_dataset`` and its damage functions, and a tiny untrained model as in tests/conftest.py)
under DIR, records each case's command line and the checksums of its input dataset in
DIR/cases.json, and opens DIR to every uid. DIR must be bound into the container at the same
path, so that the command lines hold on both sides. ``run`` starts the image's ``bids_usb``
once per case (a real process: entry point, imports and exit code as a user gets them) and
writes DIR/results.json. ``check`` holds each result to the table: the exit code, a last stderr
line ``bids_usb: error: ...`` that names the case's file or option, nothing on stdout, the input
dataset byte-identical and nothing left behind; it prints one line per case and exits 1 when
any case fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def prepare(top: Path, only: list[str]) -> int:
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "tests"))
    import shutil

    import test_bad_inputs as table
    import torch

    from usb_model.checkpoint import save_checkpoint
    from usb_model.config import load_preset
    from usb_model.networks import USBNetworks
    from usb_model.template import load_template

    if top.exists():
        shutil.rmtree(top)
    top.mkdir(parents=True)
    cfg = load_preset("tiny")  # the model of tests/conftest.py's tiny_checkpoint
    torch.manual_seed(0)
    template = load_template(cfg.grid)
    tiny = top / "models" / "tiny"
    save_checkpoint(
        USBNetworks(cfg),
        tiny,
        template={"t1w": template.t1w, "brain_mask": template.brain_mask, "affine": template.affine},
        training_data={"note": "untrained, for tests"},
    )
    table._TINY[:] = [tiny]
    base = table.make_dataset(top / "base" / "bids")
    cases = []
    for case in table.CASES:
        if only and case.id not in only:
            continue
        if case.id == "device-missing":
            pass  # no GPU in the container: cuda:7 never exists
        tmp = top / "cases" / case.id
        tmp.mkdir(parents=True)
        bids = tmp / "bids"
        shutil.copytree(base, bids)
        extra = case.damage(bids, tmp) if case.damage else []
        argv = table._argv(case, bids, tmp, list(extra or []), tiny)
        cases.append(
            {
                "id": case.id,
                "what": case.what,
                "exit": case.exit,
                "names": case.names,
                "argv": argv,
                "tmp": str(tmp),
                "bids": str(bids),
                "checksums": table._checksums(bids),
                "entries": sorted(p.name for p in tmp.iterdir()),
            }
        )
    (top / "cases.json").write_text(json.dumps(cases, indent=1))
    for path in [top, *top.rglob("*")]:  # any uid reads every file and writes every folder
        if not path.is_symlink():
            path.chmod(0o777 if path.is_dir() else 0o666)
    print(f"{len(cases)} cases prepared in {top}", file=sys.stderr)
    return 0


def run(top: Path) -> int:
    cases = json.loads((top / "cases.json").read_text())
    results = []
    for case in cases:
        start = time.monotonic()
        proc = subprocess.run(["bids_usb", *case["argv"]], capture_output=True, text=True, check=False)
        results.append(
            {
                "id": case["id"],
                "exit": proc.returncode,
                "stdout": proc.stdout,
                "stderr": proc.stderr,
                "seconds": round(time.monotonic() - start, 2),
            }
        )
        print(f"{case['id']}: exit {proc.returncode} in {results[-1]['seconds']} s", file=sys.stderr, flush=True)
    (top / "results.json").write_text(json.dumps({"uid": os.getuid(), "results": results}, indent=1))
    return 0


def check(top: Path) -> int:
    sys.path.insert(0, str(ROOT / "tests"))
    import test_bad_inputs as table

    cases = {c["id"]: c for c in json.loads((top / "cases.json").read_text())}
    done = json.loads((top / "results.json").read_text())
    failed = 0
    for result in done["results"]:
        case = cases[result["id"]]
        lines = result["stderr"].strip().splitlines()
        problems = []
        if result["exit"] != case["exit"]:
            problems.append(f"exit {result['exit']}, expected {case['exit']}")
        if not lines or not lines[-1].startswith("bids_usb: error: "):
            problems.append("the last stderr line is not 'bids_usb: error: ...'")
        elif case["names"] not in lines[-1]:
            problems.append(f"the last line does not name {case['names']!r}")
        if result["stdout"]:
            problems.append("stdout is not empty")
        if table._checksums(Path(case["bids"])) != case["checksums"]:
            problems.append("the input dataset changed")
        if sorted(p.name for p in Path(case["tmp"]).iterdir()) != case["entries"]:
            problems.append("files or folders were left behind")
        failed += bool(problems)
        state = "FAIL " + "; ".join(problems) if problems else "ok"
        last = lines[-1] if lines else ""
        print(f"{case['id']:32} exit {result['exit']:3} {result['seconds']:6.1f} s  {state}  | {last[:110]}")
        if problems:
            print("    " + "\n    ".join(lines[-5:]))
    missing = set(cases) - {r["id"] for r in done["results"]}
    total = sum(r["seconds"] for r in done["results"])
    print(
        f"{len(done['results']) - failed} of {len(cases)} cases as the table says (uid {done['uid']}, "
        f"{total:.0f} s in all){'; not run: ' + ', '.join(sorted(missing)) if missing else ''}"
    )
    return 1 if failed or missing else 0


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in ("prepare", "run", "check"):
        sys.exit(__doc__)
    step, folder = sys.argv[1], Path(sys.argv[2]).resolve()
    if step == "prepare":
        sys.exit(prepare(folder, sys.argv[3:]))
    sys.exit(run(folder) if step == "run" else check(folder))
