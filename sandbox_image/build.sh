#!/usr/bin/env bash
# Build the AInTandem sandbox image (idempotent); prints the image tag as the last stdout line.
#
#   aintandem/sandbox:<version>  version = hash of Dockerfile + runtime sources + base image name
#   aintandem/sandbox:latest     moved to the newest build
#
# No registry here: the base is a Debian root filesystem made with mmdebstrap and imported as
# aintandem/base:bookworm. AINTANDEM_SANDBOX_BASE_IMAGE overrides the base (e.g. python:3.11-slim
# on a machine with a registry; then no mmdebstrap). AINTANDEM_DEBIAN_MIRROR overrides the mirror.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
REPO="aintandem/sandbox"
DEFAULT_BASE="aintandem/base:bookworm"
BASE_IMAGE="${AINTANDEM_SANDBOX_BASE_IMAGE:-$DEFAULT_BASE}"
SUITE="bookworm"

log() { echo "sandbox-image: $*" >&2; }
die() { echo "sandbox-image: ERROR: $*" >&2; exit 1; }
now_ms() { date +%s%3N; }

"$ROOT/scripts/docker-engine.sh" >&2 || die "docker engine unavailable"

# The content hash decides rebuilds: any change to the Dockerfile, the runtime or the base image
# name gives a new tag. Paths are part of the hash so a rename also counts.
compute_version() {
    (
        cd "$HERE"
        echo "base=$BASE_IMAGE"
        find Dockerfile runtime -type f ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 \
            | LC_ALL=C sort -z | xargs -0 sha256sum
    ) | sha256sum | cut -c1-12
}
VERSION="$(compute_version)"
TAG="$REPO:$VERSION"

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

if image_exists "$TAG"; then
    docker tag "$TAG" "$REPO:latest"
    echo "$TAG"
    exit 0
fi

# Serialise concurrent builds (parallel test sessions); re-check once we hold the lock.
exec 9>/var/lock/aintandem-sandbox-build.lock
flock -w 900 9 || die "could not take /var/lock/aintandem-sandbox-build.lock"
if image_exists "$TAG"; then
    docker tag "$TAG" "$REPO:latest"
    echo "$TAG"
    exit 0
fi

debian_mirror() {
    if [ -n "${AINTANDEM_DEBIAN_MIRROR:-}" ]; then
        echo "$AINTANDEM_DEBIAN_MIRROR"
        return
    fi
    local src=/etc/apt/sources.list.d/debian.sources mirror=""
    if [ -r "$src" ]; then
        # First URIs of a deb822 stanza whose Suites include the plain suite (not -security).
        mirror="$(awk -v suite="$SUITE" '
            BEGIN { RS = ""; FS = "\n" }
            {
                uris = ""; ok = 0
                for (i = 1; i <= NF; i++) {
                    if ($i ~ /^URIs:/) { sub(/^URIs:[ \t]*/, "", $i); split($i, u, /[ \t]+/); uris = u[1] }
                    if ($i ~ /^Suites:/) { n = split($i, s, /[ \t]+/); for (j = 2; j <= n; j++) if (s[j] == suite) ok = 1 }
                }
                if (ok && uris != "") { print uris; exit }
            }' "$src")"
    fi
    if [ -z "$mirror" ] && [ -r /etc/apt/sources.list ]; then
        mirror="$(awk -v suite="$SUITE" '$1 == "deb" && $3 == suite { print $2; exit }' /etc/apt/sources.list)"
    fi
    echo "${mirror:-http://deb.debian.org/debian}"
}

build_debian_base() {
    if ! command -v mmdebstrap >/dev/null 2>&1; then
        [ "$(id -u)" -eq 0 ] || die "mmdebstrap is missing and installing it needs root"
        log "installing mmdebstrap"
        export DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1
        if ! apt-cache show mmdebstrap >/dev/null 2>&1 \
            || ! apt-get install -y -qq --no-install-recommends mmdebstrap >&2; then
            apt-get update -qq >&2 || die "apt-get update failed"
            apt-get install -y -qq --no-install-recommends mmdebstrap >&2 \
                || die "apt-get install mmdebstrap failed"
        fi
    fi
    local mirror tmp start
    mirror="$(debian_mirror)"
    tmp="$(mktemp -d /tmp/aintandem-base.XXXXXX)"
    trap 'rm -rf "$tmp"' EXIT
    log "building $DEFAULT_BASE with mmdebstrap from $mirror"
    start=$(now_ms)
    # Docs, man pages and locales are dead weight in a sandbox.
    mmdebstrap --variant=apt --include=python3,ca-certificates,tini \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --aptopt='Acquire::Retries "3"' \
        "$SUITE" "$tmp/rootfs.tar" "$mirror" >&2 || die "mmdebstrap failed"
    docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["/bin/bash"]' \
        --message "aintandem base: mmdebstrap $SUITE from $mirror" \
        "$tmp/rootfs.tar" "$DEFAULT_BASE" >&2 || die "docker import failed"
    rm -rf "$tmp"
    trap - EXIT
    log "built $DEFAULT_BASE in $(( $(now_ms) - start )) ms"
}

if [ "$BASE_IMAGE" = "$DEFAULT_BASE" ] && ! image_exists "$DEFAULT_BASE"; then
    build_debian_base
fi

log "building $TAG (base $BASE_IMAGE)"
start=$(now_ms)
# Client 28 without the buildx plugin: ask for the classic builder explicitly.
DOCKER_BUILDKIT=0 docker build \
    --build-arg "BASE_IMAGE=$BASE_IMAGE" \
    --build-arg "AINTANDEM_SANDBOX_VERSION=$VERSION" \
    --label "aintandem.sandbox.base=$BASE_IMAGE" \
    -t "$TAG" -t "$REPO:latest" \
    "$HERE" >&2 || die "docker build failed"
log "built $TAG in $(( $(now_ms) - start )) ms"
# Drop tags of older builds; `docker rmi` without -f keeps any image a container still uses.
docker image ls "$REPO" --format '{{.Repository}}:{{.Tag}}' \
    | grep -v -x -e "$TAG" -e "$REPO:latest" -e "$REPO:<none>" \
    | xargs -r docker rmi >/dev/null 2>&1 || true
echo "$TAG"
