#!/usr/bin/env bash
# Build the project's Docker image with buildah and run it with podman, where Docker Hub cannot
# be reached: a Debian bookworm root file system made with debootstrap stands in for the
# Dockerfile's base image (python:3.11.13-slim-bookworm); every other step is the Dockerfile's.
# Then, as a non-root uid with no network: `bids_usb --version`, the bad-input table
# (tests/test_bad_inputs.py) through the image's CLI, and the demo (a synthetic dataset made
# and healed with the bundled model). docs/containers.md ("Built and run here") has the results.
#
#   bash scripts/build_container.sh [STEP...]     # STEP: base build version bad-inputs demo
#                                                 # readonly save
#                                                 # (default: all of them but save)
#
# Needs root, and `apt-get install podman buildah debootstrap runc`. Settings (environment):
#   WORK=/var/tmp/bids_usb_container   base file system, logs, the demo and the table's cases
#   TORCH_WHEELS=/opt/wheels           a folder with a torch wheel (e.g. the CPU build), mounted
#                                      at build time; unset: PyPI's torch (the CUDA build)
#   FETCH_TEMPLATEFLOW=1               0 where TemplateFlow's server cannot be reached
#   CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt   mounted at build time and named in pip's
#                                      config: for a proxy that re-signs TLS; unset: none
#   RUN_UID=12345:12345                the uid:gid that runs the image
#   OCI_RUNTIME=runc                   crun refuses hybrid cgroup v1/v2 hosts; runc works
#   HOST_PYTHON=python3                a Python with the project and pytest (the table's cases
#                                      are made and checked on the host)
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -n 1)
WORK=${WORK:-/var/tmp/bids_usb_container}
BASE_IMAGE=${BASE_IMAGE:-localhost/bids_usb-base:bookworm-debootstrap}
IMAGE=${IMAGE:-localhost/bids_usb:$VERSION}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
TORCH_WHEELS=${TORCH_WHEELS:-}
FETCH_TEMPLATEFLOW=${FETCH_TEMPLATEFLOW:-1}
CA_BUNDLE=${CA_BUNDLE:-}
RUN_UID=${RUN_UID:-12345:12345}
OCI_RUNTIME=${OCI_RUNTIME:-runc}
HOST_PYTHON=${HOST_PYTHON:-python3}
STEPS=("$@")
[ ${#STEPS[@]} -gt 0 ] || STEPS=(base build version bad-inputs demo)

mkdir -p "$WORK/logs"
TIMES=$WORK/times.tsv
[ -f "$TIMES" ] || printf 'step\tseconds\texit\tdate\n' > "$TIMES"

# Run a step, log it, record its wall time and exit code.
timed() {
    local name=$1; shift
    local start rc log=$WORK/logs/$name.log
    start=$(date +%s)
    echo "== $name: $* (log: $log)" >&2
    set +e
    "$@" > "$log" 2>&1
    rc=$?
    set -e
    printf '%s\t%s\t%s\t%s\n' "$name" "$(( $(date +%s) - start ))" "$rc" "$(date -u +%FT%TZ)" >> "$TIMES"
    echo "== $name: exit $rc in $(( $(date +%s) - start )) s" >&2
    tail -n 3 "$log" >&2
    return "$rc"
}

# podman run as RUN_UID with no network. The limits are set explicitly: podman's defaults
# (nofile 1048576) exceed this host's hard limits, and setting them needs CAP_SYS_RESOURCE.
nproc=$(ulimit -Hu); [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ] && nproc=32768
RUN=(podman run --rm --runtime "$OCI_RUNTIME" --network none -u "$RUN_UID"
     --ulimit "nofile=$(ulimit -n):$(ulimit -n)" --ulimit "nproc=$nproc:$nproc")

step_base() {
    # Debian bookworm's python3 is 3.11, as in the official image. That image has `python` and
    # `pip` in /usr/local/bin (CPython built from source); here `python` is a link to Debian's
    # python3, with venv and ensurepip (python3-venv), ca-certificates, netbase and tzdata.
    rm -rf "$WORK/rootfs"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,netbase,tzdata \
        bookworm "$WORK/rootfs" "$DEBIAN_MIRROR"
    chroot "$WORK/rootfs" sh -c 'apt-get clean && rm -rf /var/lib/apt/lists/* && ln -sf /usr/bin/python3 /usr/local/bin/python'
    tar -C "$WORK/rootfs" -c . | podman import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$BASE_IMAGE"
    rm -rf "$WORK/rootfs"
}

build_args() {
    BUILD=(buildah bud --layers --isolation chroot --network host
           --build-arg "PYTHON_IMAGE=$BASE_IMAGE" --build-arg "VERSION=$VERSION"
           --build-arg "FETCH_TEMPLATEFLOW=$FETCH_TEMPLATEFLOW")
    if [ -n "$TORCH_WHEELS" ]; then
        BUILD+=(--build-arg TORCH_FIND_LINKS=/wheels --volume "$TORCH_WHEELS:/wheels:ro")
    fi
    if [ -n "$CA_BUNDLE" ]; then
        mkdir -p "$WORK/pip"
        printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' > "$WORK/pip/pip.conf"
        BUILD+=(--volume "$CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro" --volume "$WORK/pip:/etc/xdg/pip:ro")
    fi
}

step_build() {
    build_args
    timed build-builder "${BUILD[@]}" --target builder -t "localhost/bids_usb-builder:$VERSION" "$REPO"
    timed build-runtime "${BUILD[@]}" -t "$IMAGE" "$REPO"
    podman images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E "bids_usb(-base|-builder)?:" | tee "$WORK/sizes.txt"
    podman image inspect "$IMAGE" --format '{{.Size}}' > "$WORK/size_bytes.txt"
}

step_version() {
    "${RUN[@]}" "$IMAGE" --version
    "${RUN[@]}" "$IMAGE" --bids-exec-spec > "$WORK/boutiques.json"
    "${RUN[@]}" --entrypoint python "$IMAGE" -c "import torch, os; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'uid', os.getuid(), 'HOME', os.environ['HOME'])"
}

step_bad_inputs() {
    local dir=$WORK/bad_inputs
    "$HOST_PYTHON" scripts/container_bad_inputs.py prepare "$dir"
    "${RUN[@]}" -v "$dir:$dir" -v "$REPO/scripts:/scripts:ro" --entrypoint python "$IMAGE" \
        /scripts/container_bad_inputs.py run "$dir"
    "$HOST_PYTHON" scripts/container_bad_inputs.py check "$dir"
}

step_demo() {
    # The README's demo (scripts/demo.sh) inside the image: the dataset made by the image's
    # usb-synth-dataset, healed with the bundled model on the CPU.
    local dir=$WORK/demo
    rm -rf "$dir" && mkdir -p "$dir" && chown "$RUN_UID" "$dir"
    timed demo-synth "${RUN[@]}" -v "$dir:/demo" --entrypoint usb-synth-dataset "$IMAGE" \
        /demo/bids --participants 2 --n-healthy 0 --seed 0 --voxel-size 1.2
    timed demo-heal "${RUN[@]}" -v "$dir:/demo" "$IMAGE" \
        /demo/bids /demo/derivatives/bids_usb participant -w /demo/work --nprocs 2
    cat "$WORK/logs/demo-heal.log" | grep -E '\.html$' || true
    ls -ln "$dir/derivatives/bids_usb" "$dir/derivatives/bids_usb"/sub-*/anat | head -n 40
}

step_readonly() {
    # No Apptainer here: its run conditions imitated with podman. The image read only, HOME a
    # folder of the host (Apptainer binds yours), BIDS_USB_CONTAINER=apptainer (the definition's
    # %environment); then the definition's %test and one demo participant healed.
    local dir=$WORK/demo
    mkdir -p "$dir/home" && chown "$RUN_UID" "$dir/home"
    local ro=("${RUN[@]}" --read-only -v "$dir:/demo" -v "$dir/home:/home/user" -e HOME=/home/user
              -e BIDS_USB_CONTAINER=apptainer)
    "${ro[@]}" "$IMAGE" --version
    "${ro[@]}" "$IMAGE" --bids-exec-spec > /dev/null
    "${ro[@]}" "$IMAGE" /demo/bids /demo/derivatives/bids_usb_readonly participant -w /demo/work_readonly \
        --participant-label 01
    grep -o '"Type": "apptainer"' "$dir/derivatives/bids_usb_readonly/dataset_description.json"
}

step_save() {
    # A docker-archive for Apptainer: apptainer build x.sif docker-archive://FILE
    podman save --format docker-archive -o "$WORK/bids_usb-$VERSION.tar" "$IMAGE"
}

for step in "${STEPS[@]}"; do
    case $step in
        base) timed base step_base ;;
        build) step_build ;;
        version) timed version step_version ;;
        bad-inputs) timed bad-inputs step_bad_inputs ;;
        demo) step_demo ;;
        readonly) timed readonly step_readonly ;;
        save) timed save step_save ;;
        *) echo "unknown step: $step" >&2; exit 64 ;;
    esac
done
