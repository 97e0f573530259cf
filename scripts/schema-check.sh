#!/usr/bin/env bash
# Checks that src/store/schema.rs is what diesel CLI prints for the migrations, on both
# databases: verbatim for migrations/sqlite, and for migrations/postgres after mapping
# Postgres type aliases (Int4, Int8, Bytea) to the generic names. `--write` regenerates
# schema.rs from the SQLite migrations. Needs `diesel` (diesel_cli) on PATH; without it
# the script says so and exits 0 unless STRICT=1.
#   cargo install diesel_cli --no-default-features --features sqlite,postgres
# Postgres: PG_URL (an empty database) if set, else a throwaway server from
# /usr/lib/postgresql/*/bin (run as user corraltest when root, as the tests do).
set -euo pipefail
cd "$(dirname "$0")/.."
schema=src/store/schema.rs

if ! command -v diesel >/dev/null 2>&1; then
    echo "schema-check: diesel CLI not installed; skipped" >&2
    [[ "${STRICT:-0}" == 1 ]] && exit 1
    exit 0
fi

tmp=$(mktemp -d)
pgdata=""
as_pg() { if [[ $(id -u) == 0 ]]; then runuser -u corraltest -- "$@"; else "$@"; fi; }
cleanup() {
    if [[ -n "$pgdata" ]]; then as_pg "$pgbin/pg_ctl" -D "$pgdata" -m fast -w stop >/dev/null 2>&1 || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT
# An empty config: with diesel.toml, `migration run` would rewrite schema.rs itself.
: >"$tmp/diesel.toml"
dsl() { diesel --config-file "$tmp/diesel.toml" "$@"; }

# SQLite: the generated file as diesel prints it.
dsl migration run --database-url "$tmp/s.db" --migration-dir migrations/sqlite >/dev/null
dsl print-schema --database-url "$tmp/s.db" >"$tmp/sqlite.rs"
if [[ "${1:-}" == "--write" ]]; then
    cp "$tmp/sqlite.rs" "$schema"
    echo "schema-check: wrote $schema"
fi
squash() { tr -d ' \t\n' <"$1"; }
status=0
if [[ "$(squash "$tmp/sqlite.rs")" != "$(squash "$schema")" ]]; then
    echo "schema-check: $schema differs from the SQLite migrations:" >&2
    diff -u "$schema" "$tmp/sqlite.rs" >&2 || true
    status=1
fi

# Postgres: same tables, columns, nullability and (generic) types.
url="${PG_URL:-}"
if [[ -z "$url" ]]; then
    pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
    if [[ -z "$pgbin" ]]; then
        echo "schema-check: no Postgres binaries and no PG_URL; Postgres side skipped" >&2
        exit $status
    fi
    if [[ $(id -u) == 0 ]]; then
        id corraltest >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin corraltest
        chown corraltest "$tmp"
    fi
    pgdata="$tmp/pg"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    as_pg "$pgbin/initdb" -D "$pgdata" -U postgres --auth=trust --no-sync >/dev/null
    as_pg "$pgbin/pg_ctl" -D "$pgdata" -l "$pgdata/log" -o "-p $port -k $pgdata -c listen_addresses=127.0.0.1" -w start >/dev/null
    url="postgres://postgres@127.0.0.1:$port/postgres"
fi
dsl migration run --database-url "$url" --migration-dir migrations/postgres >/dev/null
dsl print-schema --database-url "$url" \
    | sed -e 's/\bInt4\b/Integer/g; s/\bInt8\b/BigInt/g; s/\bBytea\b/Binary/g; s/\bVarchar\b/Text/g' \
    >"$tmp/pg.rs"
if [[ "$(squash "$tmp/pg.rs")" != "$(squash "$schema")" ]]; then
    echo "schema-check: $schema differs from the Postgres migrations:" >&2
    diff -u "$schema" "$tmp/pg.rs" >&2 || true
    status=1
fi
[[ $status == 0 ]] && echo "schema-check: $schema matches migrations/sqlite and migrations/postgres"
exit $status
