# Sourced by scripts/image.sh and scripts/podman.sh: buildah and podman with storage and
# configuration of the project's own, under build/image/ (ignored by git), so that neither
# the machine's container storage nor its configuration is used or changed.
#
# - storage: the overlay driver, under build/image/storage;
# - engine: runc with cgroupfs (crun refuses hybrid cgroup v1/v2 hierarchies), the host's
#   network namespace (no bridge, no netavark rules), and `nofile`/`nproc` limits at the
#   machine's hard limits or lower (a container may not raise them; buildah's own processes
#   run with nproc 32768, and the operator needs a handful);
# - registries: short names resolve on docker.io, as Docker's do; nothing is pulled here.
# Requires bash and `repo_root` set to the repository's root.
IMAGE_DIR="${ROLLBACK_IMAGE_DIR:-$repo_root/build/image}"
IMAGE_NAME="rollback-operator"
IMAGE_VERSION="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$repo_root/pyproject.toml")"
IMAGE="localhost/$IMAGE_NAME:$IMAGE_VERSION"

_limit() {  # _limit HARD CAP: the hard limit, capped (an "unlimited" one too)
  if [[ "$1" == unlimited ]] || (($1 > $2)); then echo "$2"; else echo "$1"; fi
}

mkdir -p "$IMAGE_DIR"/{storage,run,tmp,networks}
cat >"$IMAGE_DIR/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$IMAGE_DIR/storage"
runroot = "$IMAGE_DIR/run"
EOF
nofile="$(_limit "$(ulimit -Hn)" 65536)"
nproc="$(_limit "$(ulimit -Hu)" 4096)"
cat >"$IMAGE_DIR/containers.conf" <<EOF
[containers]
netns = "host"
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]

[network]
network_config_dir = "$IMAGE_DIR/networks"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$IMAGE_DIR/events.log"
tmp_dir = "$IMAGE_DIR/tmp"
EOF
cat >"$IMAGE_DIR/registries.conf" <<EOF
unqualified-search-registries = ["docker.io"]
short-name-mode = "permissive"
EOF
unset nofile nproc
export CONTAINERS_STORAGE_CONF="$IMAGE_DIR/storage.conf"
export CONTAINERS_CONF="$IMAGE_DIR/containers.conf"
export CONTAINERS_REGISTRIES_CONF="$IMAGE_DIR/registries.conf"
