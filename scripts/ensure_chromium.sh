#!/usr/bin/env bash
# Installs Debian's Chromium for the end-to-end browser tests when it is missing and we may.
# Never fails the build: without a browser those tests skip and say why.
set -u
if command -v chromium >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing Debian's chromium for the browser tests..."
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
    || echo "Could not install chromium; browser tests will skip."
else
  echo "chromium not found (install Debian's 'chromium' package); browser tests will skip."
fi
exit 0
