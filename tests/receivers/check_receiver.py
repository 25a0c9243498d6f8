#!/usr/bin/env python3
"""A standard webhook receiver that checks what the Call Result Webhook sends.

Built on Python's standard library only (http.server, base64, urllib.parse.parse_qsl, json), the
way a customer's own small receiver would decode the request, so it checks the crate against
independent parsers.

It listens on a free port of 127.0.0.1 (written to --port-file), takes --requests requests
(default 1), checks each, answers --status when every check passed and 400 listing the
mismatches otherwise, and exits 0 only if every request passed. With --requests 0 it waits
--idle seconds and exits 0 only if nothing arrived.

Checks: method POST (or GET with --method get); the path and query; Content-Type for --encoding
(none for GET); Authorization exactly `Basic base64(user:password)` (--auth basic), exactly
`base64(user/password)` with no scheme word (--auth slash), exactly `Bearer <--token>` (--auth
bearer), or absent (--auth none, and --auth api-key, whose --token must be exactly the value of
the header --key-header), with the password compared after decoding as UTF-8; every --header
`NAME: VALUE` present with exactly that value;
webhook-id shaped like a generated id; User-Agent; the body (for GET: the query after the URL's
own, parsed with parse_qsl, strict, and no body at all) decoded to the ten keys, in order and
under the names --key-name KEY=NAME gives them, with exactly the values of --expect (a JSON
file in the page's formats, or `sample`); and
the Standard Webhooks signature, verified here with hmac and hashlib: with --signing-secret
(repeatable), webhook-timestamp must be within five minutes of now and webhook-signature must
hold a `v1,` HMAC-SHA256 of "id.timestamp.body" for every secret given; without it, the request
must carry no signature (a GET is signed over the empty body). The password, the token, header
values and the secrets are never printed.
"""

import argparse
import base64
import hashlib
import hmac
import http.server
import json
import os
import re
import sys
import time
from urllib.parse import parse_qsl

KEYS = [
    "CampaignName",
    "LogDateTime",
    "CallStart",
    "CallEnd",
    "PhoneCalled",
    "Reference",
    "Result",
    "ResultNotes",
    "WrapUpByName",
    "WrapUpReasonName",
]

# What `send` sends without --result: the page's sample, plus a campaign name and a result.
SAMPLE = {
    "CampaignName": "Winter Sale",
    "LogDateTime": "2019-06-19T16:11:07",
    "CallStart": "2019-06-20 01:01:00",
    "CallEnd": "2019-06-20 01:03:00",
    "PhoneCalled": "0731051xxx",
    "Reference": "123",
    "Result": "Connected",
    "WrapUpByName": "agent@pinetree.net.au",
    "WrapUpReasonName": "Payment Taken",
}

CONTENT_TYPES = {
    "form": "application/x-www-form-urlencoded",
    "json": "application/json",
}


def check_authorization(header, headers, args):
    """Mismatches in the Authorization header (or the API key's); never repeats a secret."""
    if args.auth == "api-key":
        problems = []
        if header is not None:
            problems.append("an Authorization header was sent with an API key")
        key = headers.get(args.key_header)
        if key is None:
            problems.append("no %s header" % args.key_header)
        elif not hmac.compare_digest(key.encode("utf-8"), args.token.encode("utf-8")):
            problems.append("the %s header is not exactly the API key" % args.key_header)
        return problems
    if args.auth == "none":
        return [] if header is None else ["an Authorization header was sent without credentials"]
    if header is None:
        return ["no Authorization header"]
    if args.auth == "bearer":
        if header != "Bearer " + args.token:
            return ["Authorization is not exactly `Bearer <token>`"]
        return []
    if args.auth == "basic":
        if not header.startswith("Basic "):
            return ["Authorization does not use the Basic scheme"]
        encoded, separator = header[len("Basic "):], ":"
    else:
        if " " in header:
            return ["Authorization has a scheme word; slash auth sends base64 alone"]
        encoded, separator = header, "/"
    try:
        decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
    except ValueError:
        return ["Authorization is not base64 of UTF-8 text"]
    if args.auth == "basic":
        # RFC 7617: the user name ends at the first colon.
        user, _, password = decoded.partition(separator)
        problems = []
        if user != args.username:
            problems.append("Basic user name %r, expected %r" % (user, args.username))
        if password != args.password:
            problems.append("Basic password differs")
        expected = "%s:%s" % (args.username, args.password)
        if header != "Basic " + base64.b64encode(expected.encode("utf-8")).decode("ascii"):
            problems.append("Basic Authorization is not exactly Basic base64(username:password)")
        return problems
    expected = "%s/%s" % (args.username, args.password)
    expected_header = base64.b64encode(expected.encode("utf-8")).decode("ascii")
    if header != expected_header:
        return ["slash Authorization is not exactly base64(username/password)"]
    if decoded != expected:
        return ["slash Authorization decodes to something else"]
    return []


def check_signature(headers, body, args):
    """Mismatches in the Standard Webhooks headers; never repeats a secret."""
    signature = headers.get("webhook-signature")
    if not args.signing_secret:
        if signature is not None or headers.get("webhook-timestamp") is not None:
            return ["a signature was sent, but no signing secret was given"]
        return []
    if signature is None:
        return ["no webhook-signature header"]
    msg_id = headers.get("webhook-id") or ""
    timestamp = headers.get("webhook-timestamp") or ""
    if not re.fullmatch(r"[0-9]+", timestamp):
        return ["webhook-timestamp %r is not Unix seconds" % timestamp]
    if abs(time.time() - int(timestamp)) > 300:
        return ["webhook-timestamp is more than five minutes from now"]
    sent = [entry[len("v1,"):] for entry in signature.split(" ") if entry.startswith("v1,")]
    signed = ("%s.%s." % (msg_id, timestamp)).encode("ascii") + body
    problems = []
    for i, secret in enumerate(args.signing_secret):
        if not secret.startswith("whsec_"):
            problems.append("signing secret %d does not start with whsec_" % (i + 1))
            continue
        key = base64.b64decode(secret[len("whsec_"):])
        expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode("ascii")
        if not any(hmac.compare_digest(expected, s) for s in sent):
            problems.append("no v1 signature verifies with signing secret %d" % (i + 1))
    if len(sent) != len(args.signing_secret):
        problems.append("%d v1 signatures, expected %d" % (len(sent), len(args.signing_secret)))
    return problems


def check_headers(headers, args):
    """Mismatches in the --header values; never repeats a value."""
    problems = []
    for spec in args.header:
        name, _, value = spec.partition(":")
        value = value.lstrip(" \t")
        got = headers.get_all(name) or []
        if len(got) != 1:
            problems.append("%d %s headers, expected 1" % (len(got), name))
        elif got[0] != value:
            problems.append("the %s header has another value" % name)
    return problems


def parse_form(text):
    """A form body or query, parsed strictly by the standard library."""
    return parse_qsl(
        text,
        keep_blank_values=True,
        strict_parsing=True,
        encoding="utf-8",
        errors="strict",
    )


def check_body(body, content_type, args, expected, own=()):
    names = dict(keys_renamed(args))
    if args.method == "get" or args.encoding == "form":
        try:
            pairs = parse_qsl(
                body.decode("ascii"),
                keep_blank_values=True,
                strict_parsing=True,
                encoding="utf-8",
                errors="strict",
            )
        except (UnicodeDecodeError, ValueError) as e:
            return ["the form body does not parse: %s" % e]
        own = list(own)
        if pairs[: len(own)] != own:
            return ["the URL's own query %r is not first: %r" % (own, pairs[: len(own)])]
        pairs = pairs[len(own):]
        want = [(names[k], expected.get(k) or "") for k in KEYS]
    else:
        try:
            pairs = json.loads(body.decode("utf-8"), object_pairs_hook=list)
        except ValueError as e:
            return ["the JSON body does not parse: %s" % e]
        if not isinstance(pairs, list):
            return ["the JSON body is not an object"]
        want = [(names[k], expected.get(k)) for k in KEYS]
    problems = []
    keys = [k for k, _ in pairs]
    if keys != [k for k, _ in want]:
        problems.append("keys %r, expected the ten in order %r" % (keys, [k for k, _ in want]))
    for (key, value), (_, wanted) in zip(pairs, want):
        if value != wanted:
            problems.append("%s is %r, expected %r" % (key, value, wanted))
    return problems


def keys_renamed(args):
    """(page key, name sent) for the ten keys, after --key-name."""
    renames = dict(spec.split("=", 1) for spec in args.key_name)
    return [(k, renames.get(k, k)) for k in KEYS]


def make_handler(args, expected, results):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def do_POST(self):
            self.check("POST")

        def do_GET(self):
            self.check("GET")

        def check(self, method):
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            problems = []
            wanted_method = args.method.upper()
            if method != wanted_method:
                problems.append("method %s, expected %s" % (method, wanted_method))
            content_type = self.headers.get("Content-Type")
            if wanted_method == "GET":
                path, _, query = self.path.partition("?")
                own_path, _, own_query = args.path.partition("?")
                if path != own_path:
                    problems.append("path %r, expected %r" % (path, own_path))
                if body or self.headers.get("Transfer-Encoding"):
                    problems.append("a GET carried a body")
                if content_type is not None:
                    problems.append("a GET carried Content-Type %r" % content_type)
                own = parse_form(own_query) if own_query else []
                problems += check_body(query.encode("ascii", "replace"), None, args, expected, own)
            else:
                if self.path != args.path:
                    problems.append("path %r, expected %r" % (self.path, args.path))
                if content_type != CONTENT_TYPES[args.encoding]:
                    problems.append("Content-Type %r" % content_type)
                problems += check_body(body, content_type, args, expected)
            problems += check_authorization(self.headers.get("Authorization"), self.headers, args)
            problems += check_headers(self.headers, args)
            webhook_id = self.headers.get("webhook-id") or ""
            if not re.fullmatch(r"msg_[0-9A-HJKMNP-TV-Z]{26}", webhook_id):
                problems.append("webhook-id %r is not a generated id" % webhook_id)
            agent = self.headers.get("User-Agent") or ""
            if not agent.startswith("call-result-webhook/"):
                problems.append("User-Agent %r" % agent)
            problems += check_signature(self.headers, body, args)
            results.append(problems)
            if args.delay:
                time.sleep(args.delay)
            status = args.status if not problems else 400
            reply = ("ok\n" if not problems else "\n".join(problems) + "\n").encode("utf-8")
            try:
                self.send_response(status)
                if args.location:
                    self.send_header("Location", args.location)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the sender gave up (a timeout test)

        def log_message(self, fmt, *log_args):
            sys.stderr.write("receiver: %s\n" % (fmt % log_args))

    return Handler


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port-file", required=True)
    parser.add_argument(
        "--auth", choices=["basic", "slash", "none", "bearer", "api-key"], default="none"
    )
    parser.add_argument("--token", default="", help="the bearer token or API key")
    parser.add_argument("--key-header", default="X-Api-Key", help="the API key's header")
    parser.add_argument(
        "--header", action="append", default=[], help="NAME: VALUE that must arrive (repeatable)"
    )
    parser.add_argument(
        "--key-name", action="append", default=[], help="KEY=NAME the key is sent as (repeatable)"
    )
    parser.add_argument("--method", choices=["post", "get"], default="post")
    parser.add_argument("--username", default="")
    parser.add_argument("--password", default="")
    parser.add_argument("--encoding", choices=["form", "json"], default="form")
    parser.add_argument("--expect", default="sample", help="FILE.json or `sample`")
    parser.add_argument("--path", default="/hook?x=1")
    parser.add_argument("--status", type=int, default=200)
    parser.add_argument("--location", default=None)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--requests", type=int, default=1)
    parser.add_argument("--idle", type=float, default=30.0, help="seconds to wait for a request")
    parser.add_argument(
        "--signing-secret",
        action="append",
        default=[],
        help="whsec_ secret whose v1 signature must verify (repeatable)",
    )
    args = parser.parse_args()

    if args.expect == "sample":
        expected = SAMPLE
    else:
        with open(args.expect, encoding="utf-8") as f:
            expected = json.load(f)

    results = []
    server = http.server.HTTPServer(("127.0.0.1", 0), make_handler(args, expected, results))
    server.timeout = args.idle
    with open(args.port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    # Renamed into place so a reader never sees a half-written port.
    os.replace(args.port_file + ".tmp", args.port_file)

    if args.requests == 0:
        server.handle_request()
        if results:
            print("a request arrived, but nothing should have been sent")
            return 1
        return 0
    for _ in range(args.requests):
        before = len(results)
        server.handle_request()
        if len(results) == before:
            print("no request arrived within %s s" % args.idle)
            return 1
    failed = [p for p in results if p]
    for problems in failed:
        for problem in problems:
            print("mismatch: %s" % problem)
    if not failed:
        print("all %d request(s) as expected" % len(results))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
