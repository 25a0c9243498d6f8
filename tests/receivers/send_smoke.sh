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
# A bearer token / API key and a secret header's value: never printed either.
TOKEN='tok-7f3a9c1e-SMOKE-bearer.Key_~+/='
SHARED='shared-e4c8b2-SMOKE-header'

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
# The same with notes that make a GET's URL longer than its cap (each & is sent as %26).
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); d["ResultNotes"]="&"*3000; json.dump(d, open(sys.argv[2],"w"))' \
  "$tmp/call.json" "$tmp/long.json"

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
  for secret in "$TOKEN" "$SHARED"; do
    if grep -qF "$secret" "$tmp/send.out" "$tmp/send.err"; then
      problems+=("a token or secret header value was printed")
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
  --url @ "${LOOPBACK[@]}" --username dialer --password "$PASSWORD" --auth digest

# --- what real receivers ask for: auth kinds, custom headers, renamed keys, GET ---

run_case "bearer: Authorization is exactly Bearer <token>" 0 \
  --auth bearer --token "$TOKEN" -- \
  --url @ "${LOOPBACK[@]}" --auth bearer --token "$TOKEN"

run_case "api-key: the key in the named header, no Authorization" 0 \
  --auth api-key --key-header X-Api-Key --token "$TOKEN" -- \
  --url @ "${LOOPBACK[@]}" --username dialer --password "$PASSWORD" \
  --auth api-key --key-header X-Api-Key --token "$TOKEN"

run_case "auth none: no Authorization even with credentials" 0 \
  --auth none -- \
  --url @ "${LOOPBACK[@]}" --username dialer --password "$PASSWORD" --auth none

run_case "custom headers, one secret, arrive exactly" 0 \
  --auth basic --username dialer --password "$PASSWORD" \
  --header 'X-Tenant: acme; region=au' --header "X-Shared-Key: $SHARED" -- \
  --url @ "${LOOPBACK[@]}" --username dialer --password "$PASSWORD" \
  --header 'X-Tenant:   acme; region=au' --secret-header "X-Shared-Key: $SHARED"

run_case "renamed keys, form: parse_qsl reads them in order" 0 \
  --key-name PhoneCalled=phone --key-name Reference=ref --expect "$tmp/call.json" -- \
  --url @ "${LOOPBACK[@]}" --key-name PhoneCalled=phone --key-name Reference=ref \
  --result "$tmp/call.json" --time-zone Australia/Brisbane

run_case "renamed keys, JSON, signed over the bytes sent" 0 \
  --encoding json --key-name CampaignName=campaign --signing-secret "$SECRET_NEW" -- \
  --url @ "${LOOPBACK[@]}" --encoding json --key-name CampaignName=campaign \
  --signing-secret "$SECRET_NEW"

run_case "GET: the keys after the URL's own query, no body, renamed, bearer" 0 \
  --method get --key-name PhoneCalled=phone --expect "$tmp/call.json" --auth bearer --token "$TOKEN" -- \
  --url @ "${LOOPBACK[@]}" --method get --key-name PhoneCalled=phone \
  --result "$tmp/call.json" --time-zone Australia/Brisbane --auth bearer --token "$TOKEN"

run_case "GET signed over the empty body" 0 \
  --method get --signing-secret "$SECRET_NEW" -- \
  --url @ "${LOOPBACK[@]}" --method get --signing-secret "$SECRET_NEW"

run_case "a GET too long for its URL cap sends nothing" 2 \
  --requests 0 --idle 1 -- \
  --url @ "${LOOPBACK[@]}" --method get --result "$tmp/long.json" --token "$TOKEN" --auth bearer

run_case "--auth bearer without --token sends nothing" 2 \
  --requests 0 --idle 1 -- \
  --url @ "${LOOPBACK[@]}" --auth bearer

run_case "--token without bearer or api-key sends nothing, not echoed" 2 \
  --requests 0 --idle 1 -- \
  --url @ "${LOOPBACK[@]}" --token "$TOKEN"

run_case "a header the crate owns is refused, nothing sent" 2 \
  --requests 0 --idle 1 -- \
  --url @ "${LOOPBACK[@]}" --secret-header "Authorization: Bearer $SHARED"

run_case "a malformed --secret-header is not echoed, nothing sent" 2 \
  --requests 0 --idle 1 -- \
  --url @ "${LOOPBACK[@]}" --secret-header "X-Shared-Key $SHARED"

run_case "an API key header that is not a token is refused, nothing sent" 2 \
  --requests 0 --idle 1 -- \
  --url @ "${LOOPBACK[@]}" --auth api-key --key-header 'X Api Key' --token "$TOKEN"

run_case "two keys under one name are refused, nothing sent" 2 \
  --requests 0 --idle 1 -- \
  --url @ "${LOOPBACK[@]}" --key-name PhoneCalled=Reference

run_case "a bad --method sends nothing" 2 \
  --requests 0 --idle 1 -- \
  --url @ "${LOOPBACK[@]}" --method put

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
