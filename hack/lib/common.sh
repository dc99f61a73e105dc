# Shared bash helpers for hack/demo and hack/bench. Source it; don't run it.
#
#   header TEXT            a section header on stderr
#   info / warn / die      messages on stderr (die exits 1)
#   defer CMD...           run CMD at exit (last deferred runs first); also on
#                          failure and Ctrl-C, since the EXIT trap is installed
#                          here and INT/TERM turn into an exit
#   free_port              print a free TCP port on 127.0.0.1
#   registry_start DATA    start docker-registry on 127.0.0.1:<free port> with
#                          storage in DATA; sets REGISTRY_HOST, REGISTRY_PID
#   registry_stop          stop it (also deferred by registry_start)
#   imgvol_resolve         set IMGVOL to $IMGVOL_BIN or a fresh release build
#   imgvol_has CMD         true if `imgvol CMD --help` works
#   drop_caches            sync and drop the page cache (root only)
#   now                    wall-clock seconds with microseconds

HACK_LIB="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$HACK_LIB/../.." && pwd)"

if [[ -t 2 ]]; then _B=$'\e[1m'; _R=$'\e[31m'; _Y=$'\e[33m'; _N=$'\e[0m'; else _B= _R= _Y= _N=; fi

header() { printf '\n%s==> %s%s\n' "$_B" "$*" "$_N" >&2; }
info()   { printf '    %s\n' "$*" >&2; }
warn()   { printf '%swarning:%s %s\n' "$_Y" "$_N" "$*" >&2; }
die()    { printf '%serror:%s %s\n' "$_R" "$_N" "$*" >&2; exit 1; }
now()    { echo "${EPOCHREALTIME}"; }

_DEFERRED=()
defer() { _DEFERRED+=("$*"); }
_run_deferred() {
    local rc=$? i
    trap - EXIT INT TERM
    set +e
    for (( i=${#_DEFERRED[@]}-1; i>=0; i-- )); do
        eval "${_DEFERRED[$i]}" >/dev/null 2>&1
    done
    exit "$rc"
}
trap _run_deferred EXIT
trap 'echo >&2; warn "interrupted"; exit 130' INT
trap 'exit 143' TERM

need_root() { [[ $(id -u) == 0 ]] || die "run me as root (FUSE mounts, apt-get, drop_caches)"; }

free_port() {
    python3 - <<'EOF'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
EOF
}

# registry_start DATA_DIR [LOG_FILE]
registry_start() {
    local data=$1 log=${2:-$1.log} cfg port try
    command -v docker-registry >/dev/null || die "docker-registry not installed (apt-get install docker-registry)"
    mkdir -p "$data"
    cfg="$data.yml"
    defer registry_stop
    for try in 1 2 3; do
        port=$(free_port)
        cat >"$cfg" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $data
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$port
  secret: imgvol-hack-not-secret
EOF
        docker-registry serve "$cfg" >"$log" 2>&1 &
        REGISTRY_PID=$!
        REGISTRY_HOST=127.0.0.1:$port
        local i
        for (( i=0; i<100; i++ )); do
            if curl -fsS -o /dev/null "http://$REGISTRY_HOST/v2/" 2>/dev/null; then
                return 0
            fi
            kill -0 "$REGISTRY_PID" 2>/dev/null || break
            sleep 0.1
        done
        registry_stop
        warn "registry on port $port did not come up (try $try): $(tail -n 3 "$log" 2>/dev/null)"
    done
    die "could not start docker-registry; see $log"
}

registry_stop() {
    if [[ -n ${REGISTRY_PID:-} ]]; then
        kill "$REGISTRY_PID" 2>/dev/null && wait "$REGISTRY_PID" 2>/dev/null
        REGISTRY_PID=
    fi
    return 0
}

# The manifest digest the registry holds for REPO:TAG, or nothing.
registry_digest() {
    curl -fsSI -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
        -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
        "http://$REGISTRY_HOST/v2/$1/manifests/$2" 2>/dev/null |
        tr -d '\r' | awk -F': ' 'tolower($1)=="docker-content-digest" {print $2}'
}

imgvol_resolve() {
    if [[ -n ${IMGVOL_BIN:-} ]]; then
        [[ -x $IMGVOL_BIN ]] || die "IMGVOL_BIN=$IMGVOL_BIN is not an executable"
        IMGVOL=$(readlink -f "$IMGVOL_BIN")
        info "using IMGVOL_BIN=$IMGVOL"
        return
    fi
    command -v swift >/dev/null || die "swift is not on PATH (or set IMGVOL_BIN to a built imgvol)"
    # The Swift runtime and Foundation linked in: with caches dropped the binary starts in
    # 0.09 s instead of 0.15 s (no separate libFoundation/ICU libraries to map and relocate),
    # which is most of a cold `imgvol mount`. The Containerfile builds it the same way.
    info "swift build -c release --static-swift-stdlib --product imgvol  (first build takes a while)"
    local blog; blog=$(mktemp)
    if ! (cd "$REPO_ROOT" && swift build -c release --static-swift-stdlib --product imgvol) >"$blog" 2>&1; then
        tail -n 40 "$blog" >&2; rm -f "$blog"
        die "swift build failed"
    fi
    rm -f "$blog"
    IMGVOL="$(cd "$REPO_ROOT" && swift build -c release --show-bin-path)/imgvol"
    [[ -x $IMGVOL ]] || die "no binary at $IMGVOL after the build"
    info "built $IMGVOL"
}

imgvol_has() { "$IMGVOL" "$1" --help >/dev/null 2>&1; }

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

# Unmount MNT if it is still mounted: imgvol first, then fusermount3, then lazily.
force_unmount() {
    local mnt=$1
    mountpoint -q "$mnt" 2>/dev/null || return 0
    [[ -n ${IMGVOL:-} ]] && "$IMGVOL" --root "${2:-/nonexistent}" unmount "$mnt" >/dev/null 2>&1
    mountpoint -q "$mnt" 2>/dev/null || return 0
    fusermount3 -u "$mnt" 2>/dev/null || umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null
    return 0
}

# Unmount everything mounted at or below DIR, deepest first.
umount_under() {
    local d m
    d=$(readlink -f "$1" 2>/dev/null) || return 0
    awk -v d="$d" '$2 == d || index($2, d "/") == 1 { print $2 }' /proc/mounts | sort -r |
        while read -r m; do
            m=$(printf '%b' "$m")   # /proc/mounts escapes spaces as \040
            fusermount3 -u "$m" 2>/dev/null || umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
        done
    return 0
}

# imgvol_mount ROOT REF MNT LOG [EXTRA_ARGS...]: `imgvol mount` and wait until
# MNT is mounted. Works whether the command returns once the mount is served
# (a background server) or stays in the foreground serving it; in the latter
# case MOUNT_FG_PID is its pid (else empty). Output goes to LOG.
imgvol_mount() {
    local root=$1 ref=$2 mnt=$3 log=$4 pid i j
    shift 4
    mkdir -p "$mnt"
    MOUNT_FG_PID=
    "$IMGVOL" --root "$root" mount --tls-verify=false "$@" "$ref" "$mnt" >>"$log" 2>&1 </dev/null &
    pid=$!
    for (( i=0; i<6000; i++ )); do
        if ! kill -0 "$pid" 2>/dev/null; then
            wait "$pid" || return 1
            mountpoint -q "$mnt" && return 0
            echo "imgvol mount returned 0 but $mnt is not mounted" >>"$log"
            return 1
        fi
        if mountpoint -q "$mnt"; then
            # A command about to return after mounting, or a foreground server? Poll finely:
            # a fixed sleep here would be counted in the mount-to-first-byte figure.
            for (( j=0; j<200; j++ )); do kill -0 "$pid" 2>/dev/null || break; sleep 0.005; done
            if kill -0 "$pid" 2>/dev/null; then MOUNT_FG_PID=$pid; else wait "$pid" || return 1; fi
            return 0
        fi
        sleep 0.01
    done
    kill "$pid" 2>/dev/null
    echo "imgvol mount: $mnt not mounted after 60 s" >>"$log"
    return 1
}
