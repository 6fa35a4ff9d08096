#!/usr/bin/env bash
# Debian's chromium and its matching chromedriver, for the browser tests (/docs, /console).
# Idempotent: does nothing when both are installed. Needs root (CI and dev machines are).
set -eu
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
# apt takes one caller at a time: wait for another install instead of failing on its lock.
apt-get -o DPkg::Lock::Timeout=300 update -qq
apt-get -o DPkg::Lock::Timeout=300 install -y -qq chromium chromium-driver >/dev/null
command -v chromium >/dev/null && command -v chromedriver >/dev/null
