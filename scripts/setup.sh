#!/usr/bin/env bash
# Set up everything fastforget needs on a fresh Debian/Ubuntu machine (run as root for the apt step):
# the system libraries FFCV links against, a virtual environment in .venv, and the package with its test and FFCV
# extras at the versions pinned in constraints.txt, and Ray (the `ray` extra: `fastforget bench --engine ray`, and
# the tests that run the grid on a local Ray cluster). Safe to run again: it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(g++ pkg-config libturbojpeg0-dev libopencv-dev)
# Headless Chromium renders audit.html in the tests (tests/test_audit.py), without its recommended desktop
# packages: on Debian 12, after the packages above, 9 packages, 113 MB downloaded, 475 MB on disk, 42 s to install.
BROWSER_PACKAGES=(chromium fonts-dejavu-core)
apt_install() {  # apt_install [--no-install-recommends] PACKAGE...: only when one is missing
    local packages=("$@")
    [ "${1:-}" = "--no-install-recommends" ] && packages=("${@:2}")
    dpkg -s "${packages[@]}" >/dev/null 2>&1 && return 0
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
if command -v apt-get >/dev/null 2>&1; then
    apt_install "${APT_PACKAGES[@]}"
    apt_install --no-install-recommends "${BROWSER_PACKAGES[@]}"
    EXTRAS="test,ray,timm,tensorboard,ffcv"
else
    echo "setup: no apt-get here; FFCV is skipped (install pkg-config, libturbojpeg and OpenCV headers by hand," \
         "then: .venv/bin/pip install -c constraints.txt -e '.[ffcv]'). The in-memory loader works without it." >&2
    EXTRAS="test,ray,timm,tensorboard"
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# torch first, from the pinned release (FFCV's build and the package both need it present).
.venv/bin/python -m pip install -qq -c constraints.txt torch torchvision setuptools wheel
.venv/bin/python -m pip install -qq -c constraints.txt -e ".[${EXTRAS}]"
echo "setup: done (.venv ready; extras: ${EXTRAS})"
