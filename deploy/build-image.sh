#!/usr/bin/env bash
# Builds the Plinth image from deploy/Dockerfile with the version and revision labels, tagged
# plinth:<version> and plinth:<short sha> (never only `latest`).
#
#   deploy/build-image.sh                 # Docker when installed, else Podman
#   ENGINE=podman deploy/build-image.sh
#   PLINTH_STANDIN_BASE=1 deploy/build-image.sh   # no registry: build the local base stand-in first
#
# Prints the tags on the last line. With Podman, CONTAINERS_CONF defaults to
# deploy/podman/containers.conf (runc, no default ulimits).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
ENGINE="${ENGINE:-$(command -v docker >/dev/null 2>&1 && echo docker || echo podman)}"
version="$(sed -n 's/^  "version": "\(.*\)",$/\1/p' package.json | head -n1)"
revision="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
short="${revision:0:12}"
source_url="$(git remote get-url origin 2>/dev/null || true)"
name="${PLINTH_IMAGE_NAME:-plinth}"
args=(build -f deploy/Dockerfile
  --build-arg "VERSION=$version" --build-arg "REVISION=$revision" --build-arg "SOURCE=$source_url"
  -t "$name:$version" -t "$name:$short")
if [[ "$ENGINE" == podman ]]; then
  export CONTAINERS_CONF="${CONTAINERS_CONF:-$ROOT/deploy/podman/containers.conf}"
  # Docker format keeps HEALTHCHECK (the OCI format has no field for it); host network for
  # apt-get and npm ci inside a build that itself may run in a container.
  args+=(--format docker --network host)
  # Buildah's layer cache does not key LABEL and ENV on build-arg values: a rebuild of unchanged
  # sources for a new commit would keep the previous commit's revision. Set them at commit time.
  args+=(--label "org.opencontainers.image.version=$version" --label "org.opencontainers.image.revision=$revision"
    --label "org.opencontainers.image.source=$source_url" --env "PLINTH_REVISION=$revision")
  if [[ "${PLINTH_STANDIN_BASE:-0}" == 1 ]]; then
    deploy/podman/standin-base.sh
    args+=(--pull=never)
  fi
fi
"$ENGINE" "${args[@]}" "$@" .
echo "$name:$version $name:$short"
