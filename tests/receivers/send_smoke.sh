#!/usr/bin/env bash
# Runs the `send` example against a standard receiver (tests/receivers/check_receiver.py, Python's
# standard library only) on a free loopback port, in each mode, and checks exit codes, output and
# what the receiver decoded. Exits non-zero on any mismatch.
#
# Build the example first:  cargo build --examples --features ureq,signing   (or --all-features)
# Override the binary with SEND=/path/to/send.
set -uo pipefail
cd "$(dirname "$0")/../.."

SEND="${SEND:-${CARGO_TARGET_DIR:-target}/debug/examples/send}"
RECEIVER_PY=tests/receivers/check_receiver.py
if [ ! -x "$SEND" ]; then
  echo "send_smoke: $SEND not found; build it with: cargo build --examples --features ureq,signing" >&2
  exit 2
fi

tmp=$(mktemp -d)
receiver_pid=
cleanup() {
  [ -n "$receiver_pid" ] && kill "$receiver_pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT

passed=0
failed=0
PASSWORD='pässwörd✓ & =+/:'
# Two Standard Webhooks secrets (24 and 32 bytes), for the signed cases.
SECRET_NEW='whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'
SECRET_OLD='whsec_c2lnbmluZy1zZWNyZXQtb2YtdGhlLXNtb2tlLXRlc3Q='

# A call result in the page's formats with values that test the encoders; CallStart and CallEnd
# are Brisbane time (UTC+10, no daylight saving), as --time-zone Australia/Brisbane says.
cat > "$tmp/call.json" <<'EOF'
{
  "CampaignName": "Winter Sale & Co = 100% + more",
  "LogDateTime": "2019-06-19T16:11:07",
  "CallStart": "2019-06-20 01:01:00",
  "CallEnd": "2019-06-20 01:03:00",
  "PhoneCalled": "+61 7 3105 1xxx",
  "Reference": null,
  "Result": "Temporarily Unavailable",
  "ResultNotes": "Line one\nLine two\r\nÜnïcödé ✓ 日本語 a+b=c&d;e",
  "WrapUpByName": "agent@pinetree.net.au",
  "WrapUpReasonName": "Payment Taken"
}
EOF
# The same without LogDateTime, which is required.
grep -v LogDateTime "$tmp/call.json" > "$tmp/bad.json"

# start_receiver ARGS...: starts check_receiver.py and sets PORT.
start_receiver() {
  rm -f "$tmp/port"
  python3 "$RECEIVER_PY" --port-file "$tmp/port" "$@" > "$tmp/receiver.out" 2> "$tmp/receiver.err" &
  receiver_pid=$!
  for _ in $(seq 1 200); do
    [ -s "$tmp/port" ] && break
    sleep 0.05
  done
  PORT=$(cat "$tmp/port" 2>/dev/null || echo 0)
}

# run_case NAME WANTED_EXIT RECEIVER_ARGS... -- SEND_ARGS...
# Sends to http://127.0.0.1:PORT/hook?x=1 (SEND_ARGS may use the placeholder URL `@`).
run_case() {
  local name=$1 want=$2
  shift 2
  local receiver_args=()
  while [ "$1" != "--" ]; do receiver_args+=("$1"); shift; done
  shift
  start_receiver "${receiver_args[@]}"
  local url="http://127.0.0.1:$PORT/hook?x=1"
  local send_args=()
  for a in "$@"; do
    if [ "$a" = "@" ]; then send_args+=("$url"); else send_args+=("$a"); fi
  done
  local got=0
  "$SEND" "${send_args[@]}" > "$tmp/send.out" 2> "$tmp/send.err" || got=$?
  local receiver_status=0
  wait "$receiver_pid" || receiver_status=$?
  receiver_pid=
  local problems=()
  [ "$got" = "$want" ] || problems+=("send exited $got, wanted $want")
  [ "$receiver_status" = 0 ] || problems+=("the receiver's checks failed")
  if grep -qF "$PASSWORD" "$tmp/send.out" "$tmp/send.err"; then
    problems+=("the password was printed")
  fi
  for secret in "$SECRET_NEW" "$SECRET_OLD"; do
    if grep -qF "${secret#whsec_}" "$tmp/send.out" "$tmp/send.err"; then
      problems+=("a signing secret was printed")
    fi
  done
  if [ -n "${CHECK_JSON:-}" ]; then
    python3 -c "$CHECK_JSON" < "$tmp/send.out" || problems+=("--json output: $CHECK_JSON")
  fi
  if [ ${#problems[@]} = 0 ]; then
    echo "ok   $name"
    passed=$((passed + 1))
  else
    echo "FAIL $name: ${problems[*]}"
    for f in send.out send.err receiver.out receiver.err; do
      [ -s "$tmp/$f" ] && sed "s/^/    $f: /" "$tmp/$f"
    done
    failed=$((failed + 1))
  fi
}

LOOPBACK=(--allow-http --allow-private)

run_case "basic auth, form, the page's sample, non-ASCII password" 0 \
  --auth basic --username dialer --password "$PASSWORD" --encoding form --expect sample -- \
  --url @ "${LOOPBACK[@]}" --username dialer --password "$PASSWORD"

run_case "slash auth is exactly base64(user/passwd), form" 0 \
  --auth slash --username user --password passwd -- \
  --url @ "${LOOPBACK[@]}" --auth slash --username user --password passwd

run_case "slash auth, non-ASCII password, JSON, result file in Brisbane time" 0 \
  --auth slash --username dialer --password "$PASSWORD" --encoding json --expect "$tmp/call.json" -- \
  --url @ "${LOOPBACK[@]}" --auth slash --username dialer --password "$PASSWORD" \
  --encoding json --result "$tmp/call.json" --time-zone Australia/Brisbane

run_case "no credentials, no Authorization, form, result file" 0 \
  --auth none --encoding form --expect "$tmp/call.json" -- \
  --url @ "${LOOPBACK[@]}" --result "$tmp/call.json" --time-zone Australia/Brisbane

run_case "signed: the receiver verifies the HMAC-SHA256 itself" 0 \
  --auth basic --username dialer --password "$PASSWORD" --signing-secret "$SECRET_NEW" -- \
  --url @ "${LOOPBACK[@]}" --username dialer --password "$PASSWORD" --signing-secret "$SECRET_NEW"

run_case "signed during a rotation: both signatures sent, each verifies" 0 \
  --encoding json --expect "$tmp/call.json" --signing-secret "$SECRET_NEW" --signing-secret "$SECRET_OLD" -- \
  --url @ "${LOOPBACK[@]}" --encoding json --result "$tmp/call.json" --time-zone Australia/Brisbane \
  --signing-secret "$SECRET_NEW" --signing-secret "$SECRET_OLD"

run_case "a malformed signing secret sends nothing and is not echoed" 2 \
  --requests 0 --idle 1 -- \
  --url @ "${LOOPBACK[@]}" --signing-secret "${SECRET_NEW}!"

CHECK_JSON='import json,re,sys; r=json.load(sys.stdin); assert r["delivered"] is True and r["status"] == 200 and r["error"] is None and isinstance(r["elapsed_ms"], int) and re.fullmatch(r"msg_[0-9A-Z]{26}", r["webhook_id"]), r' \
run_case "--json on success" 0 \
  --auth basic --username dialer --password "$PASSWORD" -- \
  --url @ "${LOOPBACK[@]}" --username dialer --password "$PASSWORD" --json

CHECK_JSON='import json,sys; r=json.load(sys.stdin); assert r["delivered"] is False and r["status"] == 503 and r["error"], r' \
run_case "a 503 is not delivered" 1 \
  --status 503 -- \
  --url @ "${LOOPBACK[@]}" --json

run_case "a 302 is not delivered" 1 \
  --status 302 --location http://127.0.0.1:9/elsewhere -- \
  --url @ "${LOOPBACK[@]}"

CHECK_JSON='import json,sys; r=json.load(sys.stdin); assert r["delivered"] is False and r["status"] is None and r["error_kind"] == "timeout", r' \
run_case "a slow receiver hits --timeout-ms" 1 \
  --delay 2 -- \
  --url @ "${LOOPBACK[@]}" --timeout-ms 300 --json

run_case "a bad --auth sends nothing" 2 \
  --requests 0 --idle 1 -- \
  --url @ "${LOOPBACK[@]}" --username dialer --password "$PASSWORD" --auth bearer

run_case "a result file without LogDateTime sends nothing" 2 \
  --requests 0 --idle 1 -- \
  --url @ "${LOOPBACK[@]}" --password "$PASSWORD" --result "$tmp/bad.json"

run_case "a missing result file sends nothing" 2 \
  --requests 0 --idle 1 -- \
  --url @ "${LOOPBACK[@]}" --result "$tmp/missing.json"

run_case "loopback is refused unless allowed, nothing sent" 2 \
  --requests 0 --idle 1 -- \
  --url @ --allow-http --password "$PASSWORD"

run_case "a stray argument is not echoed, nothing sent" 2 \
  --requests 0 --idle 1 -- \
  --url @ "${LOOPBACK[@]}" --username dialer "$PASSWORD"

# Nothing listening: no receiver for this one.
closed_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
got=0
"$SEND" --url "http://127.0.0.1:$closed_port/" "${LOOPBACK[@]}" --json > "$tmp/send.out" 2> "$tmp/send.err" || got=$?
if [ "$got" = 1 ] && python3 -c 'import json,sys; r=json.load(sys.stdin); assert r["delivered"] is False and r["status"] is None and r["error_kind"] == "connect" and r["error"], r' < "$tmp/send.out"; then
  echo "ok   connection refused is exit 1 with the error"
  passed=$((passed + 1))
else
  echo "FAIL connection refused: exit $got"
  sed 's/^/    /' "$tmp/send.out" "$tmp/send.err"
  failed=$((failed + 1))
fi

echo "send_smoke: $passed passed, $failed failed"
[ "$failed" = 0 ]
