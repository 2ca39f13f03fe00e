#!/usr/bin/env bash
# Installs Debian's chromium package for the browser tests (test/web-chat.test.ts), only when
# /usr/bin/chromium is missing. Needs root (or sudo) and network access to the apt mirrors.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y chromium
/usr/bin/chromium --version
