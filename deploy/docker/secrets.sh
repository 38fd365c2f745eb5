#!/usr/bin/env bash
# Generates docker-compose's secrets once into .env at the checkout's root (mode 0600, git-
# ignored), which `docker compose` reads for ${...} in docker-compose.yml. Run it before the
# first `docker compose up`; running it again keeps the secrets it made.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
ENV_FILE=$ROOT/.env
touch "$ENV_FILE"
chmod 600 "$ENV_FILE"
for name in SKEIN_KAFKA_BROKER_PASSWORD SKEIN_KAFKA_CONTROLLER_PASSWORD SKEIN_KAFKA_ADMIN_PASSWORD \
  SKEIN_KAFKA_GATE_PASSWORD SKEIN_KAFKA_STREAMERY_PASSWORD SKEIN_PG_CONTROL_PASSWORD \
  SKEIN_PG_WAREHOUSE_PASSWORD SKEIN_S3_SECRET_KEY SKEIN_SPOOL_TOKEN; do
  grep -q "^$name=" "$ENV_FILE" ||
    printf '%s=%s\n' "$name" "$(python3 -c 'import secrets; print(secrets.token_hex(24))')" >>"$ENV_FILE"
done
echo "secrets in $ENV_FILE"
