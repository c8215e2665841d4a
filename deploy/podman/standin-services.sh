#!/usr/bin/env bash
# Builds local stand-ins for the third-party images of deploy/compose.production.yaml where no
# container registry is reachable, tagged with the real images' names, so the production stack
# runs unchanged with Podman (test/compose-production.test.ts). Users with a registry never need
# this: Docker or Podman pull the real images.
#
# Each stand-in is the Debian bookworm root of deploy/podman/standin-base.sh (mmdebstrap minbase,
# cached in $PLINTH_STANDIN_CACHE) plus the Debian package of the same software, arranged the way
# the official image is: the same entrypoint contract, user, working directory and paths that the
# compose file relies on. Versions are Debian bookworm's, not the tags' (PostgreSQL 15, Redis 7.0,
# HAProxy 2.6, Prometheus 2.42, Alertmanager 0.25); every stand-in is labelled as such.
#
#   postgres:15-bookworm      docker-entrypoint.sh: initdb on an empty PGDATA with POSTGRES_USER,
#                             POSTGRES_DB and POSTGRES_PASSWORD(_FILE), scram for the network,
#                             then postgres as user postgres; STOPSIGNAL SIGINT (fast shutdown)
#   redis:7-bookworm          redis-server and redis-cli on PATH, WORKDIR /data
#   haproxy:2.6-bookworm      USER haproxy, WORKDIR /var/lib/haproxy, `haproxy` run with -W -db,
#                             STOPSIGNAL SIGUSR1 (soft stop)
#   prom/prometheus:v2.53.2   ENTRYPOINT /bin/prometheus, USER nobody, WORKDIR /prometheus
#   prom/alertmanager:v0.27.0 ENTRYPOINT /bin/alertmanager, USER nobody, WORKDIR /alertmanager
#
# Does nothing for an image that exists already (Podman's store is the cache); --force rebuilds.
# All five share one layer with the Debian packages, so apt runs once.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$ROOT/deploy/podman/containers.conf}"
CACHE="${PLINTH_STANDIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/plinth}"
ROOTFS_IMAGE=localhost/plinth-standin-bookworm:rootfs
PACKAGES_IMAGE=localhost/plinth-standin-bookworm:services
MIRROR="${PLINTH_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

declare -A IMAGES=(
  [postgres]=docker.io/library/postgres:15-bookworm
  [redis]=docker.io/library/redis:7-bookworm
  [haproxy]=docker.io/library/haproxy:2.6-bookworm
  [prometheus]=docker.io/prom/prometheus:v2.53.2
  [alertmanager]=docker.io/prom/alertmanager:v0.27.0
)
force=0
[[ "${1:-}" == "--force" ]] && force=1
missing=()
for name in postgres redis haproxy prometheus alertmanager; do
  if [[ $force == 1 ]] || ! podman image exists "${IMAGES[$name]}"; then missing+=("$name"); fi
done
if [[ ${#missing[@]} == 0 ]]; then
  echo "standin-services: all present"
  exit 0
fi
for tool in podman mmdebstrap; do
  command -v "$tool" >/dev/null || { echo "standin-services: $tool is missing (apt-get install $tool)" >&2; exit 1; }
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
build() { # tag, context dir
  podman build --quiet --network=host --pull=never -t "$1" "$2" >/dev/null
}

# The Debian root, as standin-base.sh makes and caches it.
rootfs="$CACHE/bookworm-minbase.tar"
if [[ ! -s "$rootfs" ]]; then
  mkdir -p "$CACHE"
  echo "standin-services: mmdebstrap bookworm (minbase) -> $rootfs"
  mmdebstrap --variant=minbase --format=tar --include=ca-certificates \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    bookworm "$rootfs.part" "$MIRROR"
  mv "$rootfs.part" "$rootfs"
fi
podman image exists "$ROOTFS_IMAGE" || podman import --quiet "$rootfs" "$ROOTFS_IMAGE" >/dev/null

# One layer with every package: no cluster created by the postgresql package, no service started.
if [[ $force == 1 ]] || ! podman image exists "$PACKAGES_IMAGE"; then
  mkdir -p "$work/packages"
  cat > "$work/packages/Containerfile" <<'CONTAINERFILE'
ARG ROOTFS
FROM ${ROOTFS}
RUN printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d \
    && mkdir -p /etc/postgresql-common/createcluster.d \
    && echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/no-main.conf \
    && apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
       postgresql-15 redis-server haproxy prometheus prometheus-alertmanager wget \
    && rm -rf /var/lib/apt/lists/* /var/lib/prometheus/* \
    && rm -f /usr/sbin/policy-rc.d
CONTAINERFILE
  echo "standin-services: Debian packages (postgresql-15 redis-server haproxy prometheus prometheus-alertmanager)"
  podman build --quiet --network=host --pull=never --build-arg "ROOTFS=$ROOTFS_IMAGE" \
    -t "$PACKAGES_IMAGE" "$work/packages" >/dev/null
fi

label() { # what it stands in for
  echo "LABEL org.opencontainers.image.description=\"Local stand-in for $1 from Debian bookworm packages (deploy/podman/standin-services.sh)\""
}

for name in "${missing[@]}"; do
  ctx="$work/$name"
  mkdir -p "$ctx"
  case "$name" in
    postgres)
      cat > "$ctx/docker-entrypoint.sh" <<'SCRIPT'
#!/bin/sh
# The official image's contract, reduced: initialise an empty PGDATA from POSTGRES_USER,
# POSTGRES_DB and POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE, then run postgres as postgres.
set -eu
if [ "${1:-}" = postgres ] || [ "${1#-}" != "${1:-}" ]; then
  [ "${1#-}" != "${1:-}" ] && set -- postgres "$@"
  if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chown postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
  fi
  if [ ! -s "$PGDATA/PG_VERSION" ]; then
    user="${POSTGRES_USER:-postgres}"
    db="${POSTGRES_DB:-$user}"
    if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then password="$(cat "$POSTGRES_PASSWORD_FILE")"; else password="${POSTGRES_PASSWORD:-}"; fi
    [ -n "$password" ] || { echo "docker-entrypoint.sh: set POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE" >&2; exit 1; }
    pwfile="$(mktemp)"
    printf '%s\n' "$password" > "$pwfile"
    initdb --username="$user" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 -D "$PGDATA" >/dev/null
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    if [ "$db" != postgres ]; then
      postgres --single -D "$PGDATA" -c listen_addresses='' postgres <<SQL >/dev/null
CREATE DATABASE "$db" OWNER "$user";
SQL
    fi
    echo "docker-entrypoint.sh: initialised $PGDATA (user $user, database $db)"
  fi
  exec "$@" -c listen_addresses='*'
fi
exec "$@"
SCRIPT
      cat > "$ctx/Containerfile" <<CONTAINERFILE
FROM $PACKAGES_IMAGE
COPY --chmod=755 docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
RUN mkdir -p /var/lib/postgresql/data /var/run/postgresql \\
    && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql
ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \\
    PGDATA=/var/lib/postgresql/data
VOLUME /var/lib/postgresql/data
ENTRYPOINT ["docker-entrypoint.sh"]
STOPSIGNAL SIGINT
EXPOSE 5432
CMD ["postgres"]
$(label "${IMAGES[$name]}")
CONTAINERFILE
      ;;
    redis)
      cat > "$ctx/Containerfile" <<CONTAINERFILE
FROM $PACKAGES_IMAGE
RUN mkdir -p /data && chown redis:redis /data
WORKDIR /data
VOLUME /data
EXPOSE 6379
CMD ["redis-server"]
$(label "${IMAGES[$name]}")
CONTAINERFILE
      ;;
    haproxy)
      cat > "$ctx/docker-entrypoint.sh" <<'SCRIPT'
#!/bin/sh
# As the official image: options alone run haproxy; haproxy runs in master-worker mode, in the foreground.
set -e
if [ "${1#-}" != "$1" ]; then set -- haproxy "$@"; fi
if [ "$1" = haproxy ]; then shift; set -- haproxy -W -db "$@"; fi
exec "$@"
SCRIPT
      cat > "$ctx/Containerfile" <<CONTAINERFILE
FROM $PACKAGES_IMAGE
COPY --chmod=755 docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
RUN mkdir -p /usr/local/etc/haproxy /var/lib/haproxy && chown haproxy:haproxy /var/lib/haproxy
USER haproxy
WORKDIR /var/lib/haproxy
ENTRYPOINT ["docker-entrypoint.sh"]
STOPSIGNAL SIGUSR1
CMD ["haproxy", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]
$(label "${IMAGES[$name]}")
CONTAINERFILE
      ;;
    prometheus)
      cat > "$ctx/Containerfile" <<CONTAINERFILE
FROM $PACKAGES_IMAGE
# /bin is /usr/bin (merged /usr): /bin/prometheus is there already.
RUN mkdir -p /prometheus /etc/prometheus && chown nobody:nogroup /prometheus /etc/prometheus
USER nobody
WORKDIR /prometheus
VOLUME /prometheus
EXPOSE 9090
ENTRYPOINT ["/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
$(label "${IMAGES[$name]}")
CONTAINERFILE
      ;;
    alertmanager)
      cat > "$ctx/Containerfile" <<CONTAINERFILE
FROM $PACKAGES_IMAGE
RUN ln -s prometheus-alertmanager /usr/bin/alertmanager \\
    && mkdir -p /alertmanager /etc/alertmanager && chown nobody:nogroup /alertmanager
USER nobody
WORKDIR /alertmanager
VOLUME /alertmanager
EXPOSE 9093
ENTRYPOINT ["/bin/alertmanager"]
CMD ["--config.file=/etc/alertmanager/alertmanager.yml", "--storage.path=/alertmanager"]
$(label "${IMAGES[$name]}")
CONTAINERFILE
      ;;
  esac
  build "${IMAGES[$name]}" "$ctx"
  echo "standin-services: built ${IMAGES[$name]}"
done
