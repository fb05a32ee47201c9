#!/bin/bash
# Start the attack stack: fake AC, SMTP sink, gunicorn (2 workers), optin worker. Pids in /tmp/attack/*.pid.
set -e
cd "$(dirname "$0")/../.."
PY=/tmp/venv-review/bin
mkdir -p /tmp/attack/metrics /tmp/attack/instance
export WEB_PORT=${WEB_PORT:-18731} SMTP_PORT=${SMTP_PORT:-18732}
echo "$WEB_PORT" > /tmp/attack/web.port; echo "$SMTP_PORT" > /tmp/attack/smtp.port
setsid $PY/python bench/attack/fake_ac_server.py > /tmp/attack/ac.url 2>/tmp/attack/ac.err & echo $! > /tmp/attack/ac.pid
setsid $PY/python -m aiosmtpd -n -l 127.0.0.1:$SMTP_PORT > /tmp/attack/smtp.log 2>&1 & echo $! > /tmp/attack/smtp.pid
sleep 2
. bench/attack/env.sh
psql -h 127.0.0.1 -U postgres -d test_review -qc 'DROP SCHEMA public CASCADE; CREATE SCHEMA public;'
/tmp/venv-review/bin/redis-cli -n 7 flushdb 2>/dev/null || redis-cli -n 7 flushdb
$PY/optin db upgrade > /tmp/attack/upgrade.log 2>&1
$PY/optin lists create newsletter --name Newsletter --ac-list-id 1 --locale de >> /tmp/attack/upgrade.log 2>&1
setsid $PY/gunicorn -c gunicorn.conf.py wsgi:app > /tmp/attack/web.out 2> /tmp/attack/web.err & echo $! > /tmp/attack/web.pid
setsid $PY/optin worker > /tmp/attack/worker.out 2> /tmp/attack/worker.err & echo $! > /tmp/attack/worker.pid
sleep 4
curl -s http://127.0.0.1:$WEB_PORT/readyz; echo
