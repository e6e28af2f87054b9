#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages kiln needs, only those missing (sudo when not root).
set -euo pipefail
pkgs=(build-essential cmake ninja-build ccache pkg-config libdnnl-dev libspdlog-dev libfmt-dev
      libgtest-dev libgmock-dev libbenchmark-dev nlohmann-json3-dev llvm-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "kiln: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
