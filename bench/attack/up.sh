#!/bin/bash
# Start the attack stack: fake AC, SMTP sink, gunicorn (2 workers), optin worker. Pids in /tmp/attack/*.pid.
set -e
cd "$(dirname "$0")/../.."
PY=${ATTACK_PY:-/tmp/venv-review/bin}
mkdir -p /tmp/attack/metrics /tmp/attack/instance
export WEB_PORT=${WEB_PORT:-18731} SMTP_PORT=${SMTP_PORT:-18732}
echo "$WEB_PORT" > /tmp/attack/web.port; echo "$SMTP_PORT" > /tmp/attack/smtp.port
setsid $PY/python bench/attack/fake_ac_server.py > /tmp/attack/ac.url 2>/tmp/attack/ac.err & echo $! > /tmp/attack/ac.pid
setsid $PY/python -m aiosmtpd -n -l 127.0.0.1:$SMTP_PORT > /tmp/attack/smtp.log 2>&1 & echo $! > /tmp/attack/smtp.pid
sleep 2
. bench/attack/env.sh
psql -h 127.0.0.1 -U postgres -d test_review -qc 'DROP SCHEMA public CASCADE; CREATE SCHEMA public;'
$PY/redis-cli -n 7 flushdb 2>/dev/null || redis-cli -n 7 flushdb
$PY/optin db upgrade > /tmp/attack/upgrade.log 2>&1
$PY/optin lists create newsletter --name Newsletter --ac-list-id 1 --locale de >> /tmp/attack/upgrade.log 2>&1
# consent texts are no longer created with the list: versions 1 and 2 in both locales
for v in 1 2; do for loc in de en; do
  $PY/optin consent-texts add newsletter --locale $loc --text "Consent text $loc v$v: newsletter, withdraw any time." >> /tmp/attack/upgrade.log 2>&1
done; done
setsid $PY/gunicorn -c gunicorn.conf.py wsgi:app > /tmp/attack/web.out 2> /tmp/attack/web.err & echo $! > /tmp/attack/web.pid
setsid $PY/optin worker > /tmp/attack/worker.out 2> /tmp/attack/worker.err & echo $! > /tmp/attack/worker.pid
sleep 4
curl -s http://127.0.0.1:$WEB_PORT/readyz; echo
