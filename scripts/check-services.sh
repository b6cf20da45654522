#!/usr/bin/env bash
# Say clearly when PostgreSQL or Redis is not there, instead of failing deep inside a test.
set -euo pipefail
db_url="$1" redis_url="$2"
db_host=$(sed -E 's#^[a-z]+://([^@]*@)?([^:/]+).*#\2#' <<<"$db_url")
db_port=$(sed -nE 's#^[a-z]+://([^@]*@)?[^:/]+:([0-9]+).*#\2#p' <<<"$db_url"); db_port=${db_port:-5432}
redis_host=$(sed -E 's#^redis://([^@]*@)?([^:/]+).*#\2#' <<<"$redis_url")
redis_port=$(sed -nE 's#^redis://([^@]*@)?[^:/]+:([0-9]+).*#\2#p' <<<"$redis_url"); redis_port=${redis_port:-6379}
fail=0
if ! timeout 3 bash -c "</dev/tcp/$db_host/$db_port" 2>/dev/null; then
    echo "PostgreSQL is not answering on $db_host:$db_port (set TEST_DATABASE_URL)" >&2; fail=1
fi
if ! timeout 3 bash -c "exec 3<>/dev/tcp/$redis_host/$redis_port; printf 'PING\r\n' >&3; head -c5 <&3" 2>/dev/null | grep -q PONG; then
    echo "Redis is not answering on $redis_host:$redis_port (set TEST_REDIS_URL)" >&2; fail=1
fi
exit $fail
