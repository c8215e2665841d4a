#!/usr/bin/env bash
# Creates the secret files deploy/compose.production.yaml reads, in deploy/secrets/ (git-ignored),
# each random; an existing file is kept, so running it again changes nothing. The TLS certificate
# (deploy/secrets/tls.pem: chain, then key) is yours to provide.
#
# Permissions: the directory is 700 (no other user of the host gets in); the files are 644, because
# compose secrets are bind mounts that keep the host file's owner and mode, and the containers read
# them as their own unprivileged users (Plinth 1000, postgres, Prometheus as nobody), none of which
# owns the file. Starting the stack for real (test/compose-production.test.ts) showed files of mode
# 600 unreadable to every one of them.
set -euo pipefail
dir="$(cd "$(dirname "$0")" && pwd)/secrets"
mkdir -p "$dir"
chmod 700 "$dir"
umask 022
put() { # name, value
  if [[ -s "$dir/$1" ]]; then echo "kept    secrets/$1"; else printf '%s' "$2" > "$dir/$1"; echo "created secrets/$1"; fi
}
hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }
put plinth_secret_key "$(head -c 48 /dev/urandom | base64 | tr -d '\n')"
put plinth_master_key "$(head -c 32 /dev/urandom | base64 | tr -d '\n')"
put plinth_ops_token "$(hex 32)"
put postgres_password "$(hex 24)"
put redis_password "$(hex 24)"
put database_url "postgres://plinth:$(cat "$dir/postgres_password")@postgres:5432/plinth"
put redis_url "redis://:$(cat "$dir/redis_password")@redis:6379"
[[ -s "$dir/tls.pem" ]] || echo "missing secrets/tls.pem: put your certificate chain and key there (PEM)" >&2
