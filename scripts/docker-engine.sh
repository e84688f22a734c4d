#!/usr/bin/env bash
# Ensure a local Docker engine is running (idempotent).
#
# No systemd on the build machines: install Debian's docker.io when dockerd is missing and start
# dockerd in the background ourselves. Safe to run repeatedly, as root, on a fresh machine or CI.
# Exit 0 once `docker info` works; non-zero with a clear message otherwise.
set -euo pipefail

LOG_FILE="${AINTANDEM_DOCKERD_LOG:-/var/log/aintandem-dockerd.log}"
PID_FILE="/var/run/docker.pid"
TIMEOUT="${AINTANDEM_DOCKERD_TIMEOUT:-60}"

log() { echo "docker-engine: $*" >&2; }
die() { echo "docker-engine: ERROR: $*" >&2; exit 1; }

engine_up() { docker info >/dev/null 2>&1; }

if command -v docker >/dev/null 2>&1 && engine_up; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    die "the engine is not reachable and installing/starting it needs root (run as root or start dockerd yourself)"
fi

# Serialise concurrent callers (parallel test sessions, CI steps) so only one installs/starts.
exec 9>/var/lock/aintandem-docker-engine.lock
flock -w 300 9 || die "could not take /var/lock/aintandem-docker-engine.lock"
if engine_up; then
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1
apt_has_all() {
    local p
    for p in "$@"; do apt-cache show "$p" >/dev/null 2>&1 || return 1; done
}
apt_install() {
    # Refresh the package lists only when they lack a package or are stale (install fails).
    if ! apt_has_all "$@"; then
        log "apt-get update"
        apt-get update -qq >&2 || die "apt-get update failed"
    elif apt-get install -y -qq --no-install-recommends "$@" >&2; then
        return 0
    else
        log "install failed with the current package lists; apt-get update and retry"
        apt-get update -qq >&2 || die "apt-get update failed"
    fi
    apt-get install -y -qq --no-install-recommends "$@" >&2 || die "apt-get install $* failed"
}

need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
# docker.io without recommends has no containerd/runc on some releases; pull them explicitly.
command -v containerd >/dev/null 2>&1 || need+=(containerd)
command -v runc >/dev/null 2>&1 || need+=(runc)
# init=True containers need docker-init; Debian's docker.io points it at tini (tini-static).
if ! command -v docker-init >/dev/null 2>&1 && [ ! -x /usr/libexec/docker/docker-init ] \
    && [ ! -x /usr/bin/docker-init ]; then
    need+=(tini)
fi
# dockerd needs iptables for the default bridge network; the worker adds the firewall rules of
# `egress: internet` workspace networks with it too.
command -v iptables >/dev/null 2>&1 || need+=(iptables)
# Sandbox disks (activities/sandbox_disk.py): sparse ext4 images, loop-mounted and resized.
command -v mkfs.ext4 >/dev/null 2>&1 && command -v resize2fs >/dev/null 2>&1 \
    && command -v e2fsck >/dev/null 2>&1 || need+=(e2fsprogs)
command -v losetup >/dev/null 2>&1 || need+=(mount)

if [ "${#need[@]}" -gt 0 ]; then
    log "installing ${need[*]}"
    start=$(date +%s)
    apt_install "${need[@]}"
    log "installed in $(( $(date +%s) - start )) s"
fi
command -v dockerd >/dev/null 2>&1 || die "dockerd not found after installing docker.io"
command -v docker >/dev/null 2>&1 || die "docker client not found"

proc_alive() {
    local pid="$1"
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null \
        && ! grep -qE '^[0-9]+ \(.*\) Z' "/proc/$pid/stat" 2>/dev/null
}
dockerd_running() {
    proc_alive "$1" && grep -qx dockerd "/proc/$1/comm" 2>/dev/null
}
find_dockerd() {
    local comm pid
    for comm in /proc/[0-9]*/comm; do
        pid="$(basename "$(dirname "$comm")")"
        # A dockerd that exited but is not reaped yet (a zombie) is not one to wait for.
        if [ "$(cat "$comm" 2>/dev/null)" = dockerd ] && proc_alive "$pid"; then
            echo "$pid"
            return 0
        fi
    done
    return 1
}

existing_pid=""
if [ -f "$PID_FILE" ]; then
    existing_pid="$(cat "$PID_FILE" 2>/dev/null || true)"
    if dockerd_running "$existing_pid"; then
        log "dockerd (pid $existing_pid) already running; waiting for it"
    else
        log "removing stale $PID_FILE (pid ${existing_pid:-?} is not a dockerd)"
        rm -f "$PID_FILE"
        existing_pid=""
    fi
fi
if [ -z "$existing_pid" ] && existing_pid="$(find_dockerd)"; then
    log "dockerd (pid $existing_pid) already running without $PID_FILE; waiting for it"
fi

if [ -z "$existing_pid" ]; then
    # docker-init may live only as /usr/bin/tini(-static); point dockerd at whatever exists.
    init_args=()
    if ! command -v docker-init >/dev/null 2>&1 && [ ! -x /usr/libexec/docker/docker-init ]; then
        for cand in /usr/bin/tini-static /usr/bin/tini; do
            if [ -x "$cand" ]; then init_args=(--init-path "$cand"); break; fi
        done
    fi
    mkdir -p "$(dirname "$LOG_FILE")"
    log "starting dockerd (log: $LOG_FILE)"
    # 9>&-: dockerd must not inherit (and hold forever) the lock.
    nohup dockerd "${init_args[@]}" >>"$LOG_FILE" 2>&1 </dev/null 9>&- &
    existing_pid=$!
    disown || true
fi

deadline=$(( $(date +%s) + TIMEOUT ))
until engine_up; do
    # Our own child may still be `nohup` for a moment, so check liveness, not the name.
    if ! proc_alive "$existing_pid"; then
        tail -n 20 "$LOG_FILE" >&2 2>/dev/null || true
        die "dockerd exited during startup (see $LOG_FILE)"
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
        tail -n 20 "$LOG_FILE" >&2 2>/dev/null || true
        die "docker engine did not answer within ${TIMEOUT} s (see $LOG_FILE)"
    fi
    sleep 0.2
done
log "engine ready ($(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?'))"
