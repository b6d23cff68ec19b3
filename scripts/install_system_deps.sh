#!/usr/bin/env bash
# Debian packages the tests use: espeak-ng and sox synthesise test speech;
# libportaudio2 + pulseaudio give sounddevice real (virtual) audio devices;
# chromium drives the overlay page in the browser tests.
# Installs what is missing when run as root (as CI does); otherwise says what to run.
set -euo pipefail
need=()
command -v espeak-ng >/dev/null || need+=(espeak-ng)
command -v sox >/dev/null || need+=(sox)
ldconfig -p 2>/dev/null | grep -q libportaudio.so.2 || need+=(libportaudio2)
command -v pulseaudio >/dev/null || need+=(pulseaudio)
command -v paplay >/dev/null || need+=(pulseaudio-utils)
[ -x /usr/bin/chromium ] || need+=(chromium)  # headless browser for the overlay tests (Playwright)
[ -e /usr/lib/x86_64-linux-gnu/alsa-lib/libasound_module_pcm_pulse.so ] || [ -e /usr/lib/aarch64-linux-gnu/alsa-lib/libasound_module_pcm_pulse.so ] || need+=(libasound2-plugins)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages: ${need[*]}; run: sudo apt-get install -y ${need[*]}" >&2
  exit 1
fi
echo "installing Debian packages: ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq "${need[@]}" >/dev/null
