#!/usr/bin/env bash
# make image: build the ocrserve image from the Dockerfile at the root, tagged ocrserve:<version>
# and ocrserve:latest.
#
#   deploy/image-build.sh                           podman, on localhost/debian:bookworm
#   BASE=python:3.11-slim deploy/image-build.sh     the Dockerfile's own default (a registry)
#   ENGINE=docker BASE=python:3.11-slim deploy/image-build.sh
#
# localhost/debian:bookworm is made here when missing, from the Debian mirror apt uses
# (debootstrap --variant=minbase, trimmed as debian:bookworm-slim is): a machine that reaches
# no image registry still builds. That needs root and debootstrap.
#
# pip inside the build reaches its index as this machine's pip does: PIP_INDEX_URL,
# PIP_EXTRA_INDEX_URL, PIP_TRUSTED_HOST (from the environment, else pip's configuration; only
# http(s) URLs travel) as build arguments of the build stage, and PIP_CERT (else pip's `cert`)
# as the build secret `pip_cert`. None of them is in the image.
#
# Environment: ENGINE (podman), BASE, IMAGE (ocrserve), CONTEXT (.: the working tree),
# ISOLATION (chroot, podman only), EXTRA_BUILD_ARGS.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
ENGINE=${ENGINE:-podman}
BASE=${BASE:-localhost/debian:bookworm}
IMAGE=${IMAGE:-ocrserve}
CONTEXT=${CONTEXT:-$ROOT}
VERSION=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$ROOT/src/ocrserve/_version.py")
LOCAL_BASE=localhost/debian:bookworm

log() { printf '%s\n' "image-build: $*" >&2; }

# The URIs of Debian's archive (not the security one) and of its security archive, as apt here
# has them; deb.debian.org when apt names none.
apt_uri() {
    local want=$1 uris
    uris=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
        | awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; break } }'
        sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | tr ' ' '\n')
    if [ "$want" = security ]; then
        grep -m1 -E '/debian-security/?$' <<<"$uris" || echo http://deb.debian.org/debian-security
    else
        grep -m1 -E '/debian/?$' <<<"$uris" || echo http://deb.debian.org/debian
    fi
}

make_local_base() {
    command -v debootstrap >/dev/null || { log "debootstrap is missing: apt-get install debootstrap"; exit 1; }
    local mirror security rootfs
    mirror=$(apt_uri archive)
    security=$(apt_uri security)
    rootfs=$(mktemp -d /var/tmp/ocrserve-rootfs.XXXXXX)
    trap 'rm -rf "$rootfs"' EXIT
    log "making $LOCAL_BASE from $mirror (debootstrap --variant=minbase bookworm)"
    # debian:bookworm-slim's trim: no documentation, manual pages or translations.
    mkdir -p "$rootfs/etc/dpkg/dpkg.cfg.d"
    printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
        'path-exclude /usr/share/man/*' 'path-exclude /usr/share/info/*' \
        'path-exclude /usr/share/groff/*' 'path-exclude /usr/share/lintian/*' \
        'path-exclude /usr/share/linda/*' 'path-exclude /usr/share/locale/*' \
        >"$rootfs/etc/dpkg/dpkg.cfg.d/slim"
    debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >&2
    printf '%s\n' "deb $mirror bookworm main" "deb $mirror bookworm-updates main" \
        "deb $security bookworm-security main" >"$rootfs/etc/apt/sources.list"
    # As debian:bookworm's images: no package caches or translations left in a layer.
    printf '%s\n' \
        'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };' \
        'APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };' \
        'Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";' \
        'Acquire::Languages "none";' >"$rootfs/etc/apt/apt.conf.d/docker-clean"
    find "$rootfs/usr/share/doc" -mindepth 2 ! -name copyright ! -type d -delete 2>/dev/null || true
    rm -rf "$rootfs"/usr/share/{man,info,locale}/* "$rootfs"/var/cache/apt/archives/*.deb \
        "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log
    tar --numeric-owner -C "$rootfs" -c . | "$ENGINE" import --change 'CMD ["/bin/bash"]' - "$LOCAL_BASE" >&2
    rm -rf "$rootfs"
    trap - EXIT
}

# Space-separated values of a pip setting, from the environment or else pip's configuration.
pip_setting() {
    local env_name=$1 key=$2
    if [ -n "${!env_name:-}" ]; then
        printf '%s' "${!env_name}"
    else
        python3 -m pip config get "global.$key" 2>/dev/null || true
    fi
}

http_only() { tr ' \n' '\n\n' | grep -E '^https?://' | paste -sd ' ' - || true; }

if [ "$BASE" = "$LOCAL_BASE" ] && ! "$ENGINE" image inspect "$LOCAL_BASE" >/dev/null 2>&1; then
    make_local_base
fi

args=(--build-arg "BASE=$BASE" --build-arg "VERSION=$VERSION" -t "$IMAGE:$VERSION" -t "$IMAGE:latest")
index=$(pip_setting PIP_INDEX_URL index-url | http_only)
extra=$(pip_setting PIP_EXTRA_INDEX_URL extra-index-url | http_only)
trusted=$(pip_setting PIP_TRUSTED_HOST trusted-host)
[ -n "$index" ] && args+=(--build-arg "PIP_INDEX_URL=$index")
[ -n "$extra" ] && args+=(--build-arg "PIP_EXTRA_INDEX_URL=$extra")
[ -n "$trusted" ] && args+=(--build-arg "PIP_TRUSTED_HOST=$trusted")
cert=$(pip_setting PIP_CERT cert)
[ -n "$cert" ] && [ -f "$cert" ] && args+=(--secret "id=pip_cert,src=$cert")
case "$(basename "$ENGINE")" in
    # docker format: OCI images have no HEALTHCHECK. Isolation chroot: no nested runtime needed.
    podman | buildah) args+=(--format docker --isolation "${ISOLATION:-chroot}") ;;
esac
# shellcheck disable=SC2206
args+=(${EXTRA_BUILD_ARGS:-})

log "$ENGINE build ${args[*]} $CONTEXT"
start=$(date +%s)
"$ENGINE" build "${args[@]}" -f "$ROOT/Dockerfile" "$CONTEXT"
size=$("$ENGINE" image inspect --format '{{.Size}}' "$IMAGE:$VERSION")
log "built $IMAGE:$VERSION in $(($(date +%s) - start)) s: $(((size + 500000) / 1000000)) MB uncompressed"
