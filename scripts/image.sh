#!/usr/bin/env bash
# `make image`: builds the Dockerfile with buildah into the project's own container storage
# (scripts/containers-env.sh) and tags it localhost/rollback-operator:<version of
# pyproject.toml>, labelled with that version. Run it with scripts/podman.sh.
#
# No registry is reachable from where this is built and tested, so the Dockerfile's base,
# python:3.11-slim-bookworm, is made from Debian's packages instead: a minbase bookworm with
# Python 3.11 (mmdebstrap), without documentation, manual pages and translations as Debian's
# slim images, imported under the base's own name (docker.io/library/python:3.11-slim-bookworm).
# The tarball is cached in ~/.cache/rollback-operator/image/, keyed by what makes it (delete
# it to take Debian's updates since). A base
# pulled from Docker Hub into the storage is used as it is (ROLLBACK_IMAGE_BASE=pulled).
#
# The host's CA bundle is mounted over the base's for pip (which goes through a TLS-intercepting
# proxy in some places), and the wheels the build installs are downloaded once and mounted:
# neither is ever copied into a layer.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
source scripts/containers-env.sh

for tool in buildah podman mmdebstrap runc; do
  command -v "$tool" >/dev/null || {
    echo "$tool is missing: run scripts/install-system-deps.sh" >&2
    exit 1
  }
done

base="docker.io/library/python:3.11-slim-bookworm"
suite=bookworm
packages=python3,python3-venv,python3-pip,python-is-python3,ca-certificates
excludes=('/usr/share/doc/*' '/usr/share/man/*' '/usr/share/info/*' '/usr/share/locale/*' '/usr/share/lintian/*')
mmdebstrap_args=(--variant=minbase --include="$packages" --architectures="$(dpkg --print-architecture)")
for path in "${excludes[@]}"; do mmdebstrap_args+=(--dpkgopt="path-exclude=$path"); done
mmdebstrap_args+=(--dpkgopt='path-include=/usr/share/doc/*/copyright' "$suite")
key="$(printf '%s\n' "${mmdebstrap_args[@]}" | sha256sum | cut -c1-16)"
cache="${ROLLBACK_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rollback-operator}/image"
tarball="$cache/base-$suite-$key.tar"
marker="localhost/rollback-operator-base:$key"  # which tarball the base in the storage is from

started=$SECONDS
if [[ "${ROLLBACK_IMAGE_BASE:-}" == pulled ]]; then
  podman image exists "$base" || { echo "no $base in $IMAGE_DIR/storage" >&2; exit 1; }
elif ! podman image exists "$marker" || ! podman image exists "$base"; then
  if [[ ! -f "$tarball" ]]; then
    echo "making the base from Debian $suite: mmdebstrap ${mmdebstrap_args[*]}"
    mkdir -p "$cache"
    mmdebstrap --quiet --format=tar "${mmdebstrap_args[@]}" "$tarball.$$.tmp"
    mv "$tarball.$$.tmp" "$tarball"
  fi
  echo "importing $tarball as $base"
  podman import --quiet \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    "$tarball" "$marker" >/dev/null
  podman tag "$marker" "$base"
fi

# The wheels of requirements.lock and of the build backend, downloaded once by the base's pip
# and cached by what they are for, so that a build needs no PyPI; mounted for the build only.
ca=/etc/ssl/certs/ca-certificates.crt
backend="$(sed -n 's/^requires = \[\(.*\)\]$/\1/p' pyproject.toml | tr -d '" ' | tr ',' ' ')"
wheels="$cache/wheels-$(cat requirements.lock <(echo "$backend $key") | sha256sum | cut -c1-16)"
if [[ ! -d "$wheels" ]]; then
  echo "downloading the wheels of requirements.lock and $backend into $wheels"
  mkdir -p "$wheels.$$.tmp"
  # shellcheck disable=SC2086  # $backend: one argument per requirement
  podman run --rm --network host --volume "$ca:$ca:ro" --env "PIP_CERT=$ca" \
    --volume "$repo_root/requirements.lock:/requirements.lock:ro" \
    --volume "$wheels.$$.tmp:/wheels" "$base" pip download --quiet --no-cache-dir \
    --only-binary=:all: --dest /wheels --requirement /requirements.lock $backend
  mv -T "$wheels.$$.tmp" "$wheels" 2>/dev/null || rm -rf "$wheels.$$.tmp"  # another build's won
fi

# Both are mounted on paths the base already has (the CA file, the empty /mnt): a mount on a
# path it lacks would leave that path, empty, in every layer built under it.
buildah bud --pull=never --force-rm --layers --isolation chroot --network host \
  --volume "$ca:/etc/ssl/certs/ca-certificates.crt:ro" --build-arg "PIP_CERT=$ca" \
  --volume "$wheels:/mnt:ro" --build-arg PIP_FIND_LINKS=/mnt --build-arg PIP_NO_INDEX=1 \
  --build-arg "VERSION=$IMAGE_VERSION" --tag "$IMAGE" "$@" .

size="$(podman image inspect --format '{{.Size}}' "$IMAGE")"
echo "built $IMAGE in $((SECONDS - started)) s: $((size / 1000000)) MB ($size bytes)"
