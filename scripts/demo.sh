#!/usr/bin/env bash
# The main job end to end on the sample data: enrol 4 people, preprocess, recognise a sample
# video with a stranger in it, print the attendance table.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
exec .venv/bin/attendance demo "$@"
