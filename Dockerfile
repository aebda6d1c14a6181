# bids_usb: USB lesion healing and embedding as a BIDS App, with a CUDA build of PyTorch.
#
#   docker build -t bids_usb:0.1.0 --build-arg VERSION=0.1.0 .
#   docker run --rm --gpus all -u "$(id -u):$(id -g)" \
#       -v /data/bids:/data:ro -v /data/out:/out -v /scratch/work:/work \
#       bids_usb:0.1.0 /data /out participant -w /work
#
# Two stages: "builder" installs the app into a virtual environment (/opt/venv) and fetches
# TemplateFlow's MNI152NLin2009aSym (/opt/templateflow); "runtime" copies both onto a clean base.
# Nothing is downloaded at run time: every run registers to the template stored in the model's
# checkpoint, and reads TemplateFlow's files from TEMPLATEFLOW_HOME, offline, where the model
# was trained on TemplateFlow's copy. docs/containers.md explains every choice, and
# tests/test_container.py checks this file against .ci/run and the repository (it cannot rot
# silently where no Docker engine is available to build it).

# The same Debian Python image in both stages, so that /opt/venv's interpreter path holds.
# Pin it by digest (python:3.11.13-slim-bookworm@sha256:...) once an image has been pulled.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv

# PyTorch first, with the version .ci/run pins. On PyPI the Linux wheel of torch 2.13.0 is the
# CUDA 13.0 build (its CUDA and cuDNN libraries come as nvidia-* wheels; the host only needs an
# NVIDIA driver >= 580). For older drivers, build from another PyTorch index, e.g.
#   --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126
# TORCH_FIND_LINKS (empty by default) names a folder of wheels that pip also looks in, mounted
# at build time; a torch wheel there of the same version with a local label (the CPU build) wins
# over PyPI's. Only for CPU-only test builds (scripts/build_container.sh):
#   --build-arg TORCH_FIND_LINKS=/wheels --volume /path/to/wheels:/wheels:ro
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://pypi.org/simple
ARG TORCH_FIND_LINKS=""
RUN if [ -n "${TORCH_FIND_LINKS}" ]; then export PIP_FIND_LINKS="${TORCH_FIND_LINKS}"; fi \
    && python -m pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}" \
    && echo "torch==${TORCH_VERSION}" > /opt/torch-constraint.txt

# The project, from the repository, with the runtime extras CI tests (.ci/run installs
# ".[test]", which pulls in app, metrics and synth); torch stays at the version above and the
# other dependencies take the ranges of pyproject.toml, as in CI.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY usb_model ./usb_model
COPY bids_usb ./bids_usb
COPY resources ./resources
RUN python -m pip install --constraint /opt/torch-constraint.txt ".[app,metrics,synth]"

# The bundled model ships inside the package (resources/models/demo). The build stops
# here when it is missing, since such an image could only run with --model; pass
# --build-arg REQUIRE_MODEL=0 to build one anyway (for development). "python -I" keeps /src off
# sys.path: these checks look at the installed package, not at the source tree.
ARG REQUIRE_MODEL=1
RUN if [ "$REQUIRE_MODEL" = "1" ]; then \
        python -I -c "from bids_usb.model import ModelBundle; b = ModelBundle.open(None); print('bundled model', b.path, b.sha256)"; \
    fi \
    && python -I -c "import importlib.resources as r; p = r.files('bids_usb_resources') / 'boutiques.json'; assert p.is_file(), p"

# TemplateFlow's MNI152NLin2009aSym at res-1 (T1w, brain mask, GM/WM/CSF probabilistic maps: the
# files usb_model.template asks templateflow.api.get for), fetched now so that no run needs the
# network; the runtime stage copies them and sets TEMPLATEFLOW_HOME (and
# TEMPLATEFLOW_AUTOUPDATE=0), as fMRIPrep's image carries its templates pre-fetched. The second
# command checks that the app finds them offline. Where TemplateFlow's server cannot be reached,
# --build-arg FETCH_TEMPLATEFLOW=0 leaves a note instead: the bundled model uses nilearn's copy of
# the template anyway, and a model trained on TemplateFlow's falls back to it with one log line,
# named in the sidecars (docs/containers.md).
ENV TEMPLATEFLOW_HOME=/opt/templateflow \
    TEMPLATEFLOW_AUTOUPDATE=0
ARG FETCH_TEMPLATEFLOW=1
RUN mkdir -p "${TEMPLATEFLOW_HOME}" \
    && if [ "${FETCH_TEMPLATEFLOW}" = "1" ]; then \
        python -I -c "import templateflow.api as tf; from usb_model.template import TEMPLATE_NAME, TEMPLATEFLOW_QUERIES; \
print(*(tf.get(TEMPLATE_NAME, resolution=1, extension='.nii.gz', **q) for q in TEMPLATEFLOW_QUERIES.values()))" \
        && python -I -c "from usb_model.template import resolve_source; print(resolve_source('templateflow', fallback=False))"; \
    else \
        echo "TemplateFlow templates not fetched: built with FETCH_TEMPLATEFLOW=0" > "${TEMPLATEFLOW_HOME}/NOT_FETCHED.txt"; \
    fi


FROM ${PYTHON_IMAGE} AS runtime

ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="bids_usb" \
      org.opencontainers.image.description="USB lesion healing and embedding for BIDS datasets (a BIDS App)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/bids-usb/bids_usb" \
      org.opencontainers.image.url="https://github.com/bids-usb/bids_usb" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="bids_usb developers"

COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /opt/templateflow /opt/templateflow

# No USER line: the image runs as whatever uid starts it (docker run -u, Apptainer), so HOME is a
# folder any uid can write. Thread counts default to 1 per process (nipype runs --nprocs of
# them); raise them with -e OMP_NUM_THREADS=8 (docker) or --env (Apptainer).
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/home/bids_usb \
    TEMPLATEFLOW_HOME=/opt/templateflow \
    TEMPLATEFLOW_AUTOUPDATE=0 \
    OMP_NUM_THREADS=1 \
    MKL_NUM_THREADS=1 \
    OPENBLAS_NUM_THREADS=1 \
    ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=1 \
    DENO_DIR=/home/bids_usb/.cache/deno \
    MPLBACKEND=Agg \
    NIPYPE_NO_ET=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    BIDS_USB_CONTAINER=docker

# Warm the caches a run would otherwise build on first use (Deno's for bids-validator-deno,
# matplotlib's font list), check the app starts, and open HOME to every uid.
RUN mkdir -p "$DENO_DIR" \
    && bids-validator-deno --version \
    && python -c "import matplotlib.pyplot" \
    && bids_usb --version \
    && chmod -R a+rwX "$HOME" \
    && chmod 1777 "$HOME"

WORKDIR /tmp
ENTRYPOINT ["bids_usb"]
