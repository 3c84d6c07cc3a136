#!/usr/bin/env bash
# Build the production image (Dockerfile) with podman from nothing but Debian's and PyPI's
# packages: no registry image is pulled.
#
#   1. the base, once: a minimal Debian bookworm from the Debian mirror apt is configured with
#      (debootstrap --variant=minbase), imported as localhost/debian-min:bookworm. Reused when it
#      exists; REBUILD_BASE=1 makes it again;
#   2. the image, FROM that base (the Dockerfile's BASE_IMAGE build argument; Debian's python3),
#      dependencies from uv.lock, the DuckDB extensions and the component state baked in, tagged
#      localhost/pipelines:<short git sha> (-dirty when what the image copies has uncommitted
#      changes; it then records no commit) and :latest.
#
# On a fresh Debian machine, as root:  apt-get install -y podman runc debootstrap
#                                      bash deploy/build-image.sh
# (Not root: the base is made through sudo when it asks no password, the rest runs rootless.)
# Environment (all optional):
#   DEBIAN_MIRROR  the mirror for debootstrap (default: the first Debian archive in apt's sources)
#   BASE_IMAGE     the base to build on (default localhost/debian-min:bookworm)
#   IMAGE          the image name (default localhost/pipelines)
#   CA_BUNDLE      a CA bundle for the build's downloads (default: $PIP_CERT, else $SSL_CERT_FILE);
#                  passed as a build secret, never written into a layer
#   REBUILD_BASE=1 debootstrap the base again even if it exists
# Its last line names the image: `build-image: image localhost/pipelines:<tag>`.
# docs/production.md, "Build the image here".
set -euo pipefail
cd "$(dirname "$0")/.."

SUITE=bookworm  # its python3 is 3.11, the Python of the production base (Dockerfile)
BASE_IMAGE=${BASE_IMAGE:-localhost/debian-min:$SUITE}
IMAGE=${IMAGE:-localhost/pipelines}
# runc: crun fails on hosts with hybrid cgroups; the ulimits: podman's defaults cannot be set in
# some containers (setrlimit RLIMIT_NOFILE: Operation not permitted).
PODMAN=(podman --runtime runc)
LIMITS=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)

die() { echo "build-image: $*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || die "$1 is not installed: apt-get install -y $2"; }

need podman "podman runc debootstrap"
need runc "runc"

# The first Debian archive (not -security, not -updates) in apt's sources, deb822 or one-line.
debian_mirror() {
  {
    # deb822: a stanza with a plain suite, component main, and Debian's keyring or none.
    awk 'BEGIN { RS = "" }
         /(^|\n)Types:[^\n]*deb( |\n|$)/ && /(^|\n)Components:[^\n]*main/ &&
         !/(^|\n)Enabled: *no/ && (!/Signed-By:/ || /debian-archive-keyring/) {
           n = split($0, lines, "\n"); uri = ""; plain = 0
           for (i = 1; i <= n; i++) {
             split(lines[i], f, /[ \t]+/)
             if (f[1] == "URIs:") uri = f[2]
             if (f[1] == "Suites:") for (j = 2; j in f; j++) if (f[j] ~ /^[a-z]+$/) plain = 1
           }
           if (uri != "" && plain) print uri
         }' /etc/apt/sources.list.d/*.sources 2>/dev/null || true
    # one-line: deb [options] URI SUITE main
    cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
      | sed -e 's/#.*//' -e 's/\[[^]]*\]//' \
      | awk '$1 == "deb" && $3 ~ /^[a-z]+$/ && / main/ { print $2 }' || true
  } | head -n 1
}

# As root: a minimal Debian $2 from mirror $3 in the new folder $1, slimmed as Debian's slim images
# are (no documentation, manual pages or translations, copyright files kept; neither now nor for
# the packages the Dockerfile adds) and without package lists or caches.
make_rootfs() {
  set -euo pipefail
  local rootfs=$1 suite=$2 mirror=$3
  debootstrap --variant=minbase "$suite" "$rootfs" "$mirror"
  printf 'path-exclude %s\n' /usr/share/doc/\* /usr/share/man/\* /usr/share/info/\* \
    /usr/share/locale/\* /usr/share/lintian/\* >"$rootfs/etc/dpkg/dpkg.cfg.d/slim"
  printf 'path-include /usr/share/doc/*/copyright\n' >>"$rootfs/etc/dpkg/dpkg.cfg.d/slim"
  find "$rootfs/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
  find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/* \
    "$rootfs"/usr/share/lintian/* "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin \
    "$rootfs"/var/lib/apt/lists/*
}

# debootstrap needs root: root runs it, anyone else through sudo when it asks no password (the
# base is then imported into that user's podman storage).
as_root() {
  if [ "$(id -u)" = 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo -n "$@"
  else
    die "making the base image needs root (debootstrap): run as root"
  fi
}

if [ "${REBUILD_BASE:-0}" = 1 ] || ! podman image exists "$BASE_IMAGE"; then
  [ "$BASE_IMAGE" = "localhost/debian-min:$SUITE" ] \
    || die "base image $BASE_IMAGE does not exist (only localhost/debian-min:$SUITE is built here)"
  need debootstrap "debootstrap"
  as_root true
  mirror=${DEBIAN_MIRROR:-$(debian_mirror)}
  [ -n "$mirror" ] || die "no Debian archive in apt's sources (/etc/apt/sources.list*): set DEBIAN_MIRROR"
  work=$(mktemp -d /var/tmp/debian-min.XXXXXX)
  trap 'as_root rm -rf --one-file-system "$work"' EXIT
  echo "build-image: debootstrap $SUITE from $mirror"
  started=$SECONDS
  as_root bash -c "$(declare -f make_rootfs); make_rootfs \"\$@\"" make_rootfs "$work/rootfs" "$SUITE" "$mirror" \
    >"$work/log" 2>&1 || { tail -n 30 "$work/log" >&2; die "debootstrap failed"; }
  as_root tar -C "$work/rootfs" -c . | podman import --quiet - "$BASE_IMAGE" >/dev/null
  as_root rm -rf --one-file-system "$work"
  trap - EXIT
  echo "build-image: base $BASE_IMAGE made in $((SECONDS - started)) s"
else
  echo "build-image: reusing base $BASE_IMAGE"
fi

# Tagged as production tags (docs/production.md, step 4): the short commit.
commit=$(git rev-parse HEAD 2>/dev/null || true)
tag=$(git rev-parse --short HEAD 2>/dev/null || echo unversioned)
if [ -n "$commit" ] && [ -n "$(git status --porcelain -- Dockerfile .dockerignore pyproject.toml uv.lock README.md pipelines)" ]; then
  tag="$tag-dirty"
  commit=""  # the release records must not name a commit the image does not match
fi

secrets=()
ca=${CA_BUNDLE:-${PIP_CERT:-${SSL_CERT_FILE:-}}}
if [ -n "$ca" ]; then
  [ -s "$ca" ] || die "CA bundle $ca does not exist"
  secrets=(--secret "id=ca,src=$ca")
fi

echo "build-image: building $IMAGE:$tag on $BASE_IMAGE"
started=$SECONDS
"${PODMAN[@]}" build "${LIMITS[@]}" --network host "${secrets[@]}" \
  --build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "PIPELINES_GIT_COMMIT=$commit" \
  -t "$IMAGE:$tag" -t "$IMAGE:latest" -f Dockerfile .
size=$(podman image inspect --format '{{.Size}}' "$IMAGE:$tag")
echo "build-image: built in $((SECONDS - started)) s, $((size / 1000000)) MB"
echo "build-image: image $IMAGE:$tag"
