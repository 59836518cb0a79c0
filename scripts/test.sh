#!/usr/bin/env bash
# Lint, the import-layer contracts and the whole test suite (unit + real-weight integration +
# window tests under Xvfb + PostgreSQL store tests against a private server).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
need=()
command -v Xvfb >/dev/null || need+=(xvfb)
command -v xdotool >/dev/null || need+=(xdotool)
command -v import >/dev/null || need+=(imagemagick)
command -v xwininfo >/dev/null || need+=(x11-utils)
# The PostgreSQL server binaries for tests/pg.py (a private server per session, on its own
# port; the cluster service the Debian package may start at install time is not used).
{ [ -x "$(pg_config --bindir 2>/dev/null)/initdb" ] || compgen -G "/usr/lib/postgresql/*/bin/initdb" ||
  command -v initdb; } >/dev/null || need+=(postgresql)
# Debian's Chromium and ChromeDriver for the dashboard's browser tests (headless; Selenium is
# pointed at /usr/bin/chromedriver, so nothing is downloaded at run time).
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
bash scripts/setup.sh dev
.venv/bin/ruff check .
.venv/bin/lint-imports --no-cache  # the layer contracts in pyproject.toml
exec .venv/bin/python -m pytest -q "$@"
