#!/usr/bin/env bash
# Debian packages the test suite needs (Xvfb and the libraries Qt needs for napari tests; dicom3tools' dciodvfy,
# the DICOM validator, and Orthanc, a PACS, for the export tests).
# Installed when run as root; otherwise named in a message and the tests that need them skip.
set -euo pipefail
PKGS=(xvfb xauth libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0 libxcb-cursor0 libxkbcommon-x11-0 libgl1 libegl1
      dicom3tools orthanc)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "installing system packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    echo "mrtherm: missing system packages: ${missing[*]}"
    echo "         install them with: sudo apt-get install ${missing[*]}  (napari and export tests need them)"
fi
