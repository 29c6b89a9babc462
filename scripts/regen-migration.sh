#!/usr/bin/env bash
# Regenerates the initial migration from the models (the schema is not released yet, so it
# stays one revision). Run after changing src/service/db/models/*.py.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
rm -f src/service/db/migrations/versions/0001_initial_schema.py
cat > "$tmp/alembic.ini" <<INI
[alembic]
script_location = $PWD/src/service/db/migrations
sqlalchemy.url = sqlite+aiosqlite:///$tmp/empty.db
INI
.venv/bin/alembic -c "$tmp/alembic.ini" revision --autogenerate -m "initial schema" --rev-id 0001 >/dev/null
sed -i '/^Create Date:/d' src/service/db/migrations/versions/0001_initial_schema.py
.venv/bin/ruff format -q src/service/db/migrations/versions/0001_initial_schema.py
.venv/bin/ruff check -q --fix src/service/db/migrations/versions/0001_initial_schema.py || true
echo "regenerated src/service/db/migrations/versions/0001_initial_schema.py"
