#!/usr/bin/env bash
# Installs Mesa's software Vulkan driver (lavapipe) >= 25 so that WebGPU runs without a GPU.
# Debian 12's own Mesa 22 is too old for Dawn; bookworm-backports has Mesa 25. Run as root (or with sudo).
set -euo pipefail
if ! grep -q 'bookworm' /etc/os-release 2>/dev/null; then
  echo "This script targets Debian 12 (bookworm). Elsewhere install mesa-vulkan-drivers >= 25 from your distribution." >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
if [ ! -f /etc/apt/sources.list.d/backports.sources ]; then
  uri=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
  uri=${uri:-http://deb.debian.org/debian}
  printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$uri" \
    > /etc/apt/sources.list.d/backports.sources
fi
apt-get update -qq
apt-get install -y -qq -t bookworm-backports mesa-vulkan-drivers >/dev/null
echo "lavapipe installed: $(dpkg-query -W -f='${Version}' mesa-vulkan-drivers)"
