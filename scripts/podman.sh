#!/usr/bin/env bash
# podman on the project's own container storage and configuration (scripts/containers-env.sh),
# where `make image` puts the image: `scripts/podman.sh images`, `scripts/podman.sh run ...`.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$repo_root/scripts/containers-env.sh"
exec podman "$@"
