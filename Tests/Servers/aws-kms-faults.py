#!/usr/bin/env python3
"""A fault layer in front of moto's KMS server, for cmkfs' AWS KMS tests.

moto answers the KMS JSON API but checks no signature and keeps encrypting and decrypting
under a disabled key or one pending deletion. Real AWS does neither, so this proxy adds what
the tests need AWS to do:
  * verifies every request's Signature Version 4 (an independent implementation of the signer,
    with Python's hmac/hashlib) against the access keys in $CMKFS_TEST_AWS_KEYS ("ID:SECRET,...");
    an unknown key id gets UnrecognizedClientException, a wrong signature InvalidSignatureException;
  * refuses Encrypt/Decrypt/ReEncrypt under a Disabled key (DisabledException) or one
    PendingDeletion (KMSInvalidStateException), asking moto's DescribeKey first, as AWS does;
  * answers IncorrectKeyException where moto says AccessDeniedException for a ciphertext naming
    another key than the request's KeyId (a tampered key-id prefix), as AWS does;
  * faults on demand, set by POST /__fault {"throttle": N, "deny": bool, "stall": bool,
    "deleted": [KEY-ID, ...]}: the next N crypto calls ThrottlingException, AccessDeniedException
    for every call, accepting requests and never answering (a hung server), or NotFoundException
    for every call naming a listed key (what AWS answers once a key's deletion window passed:
    moto never deletes a key);
  * GET /__stats: calls per operation.
Usage: aws-kms-faults.py LISTEN_PORT UPSTREAM_URL (prints "ready PORT" once listening).
"""
import hashlib, hmac, json, os, sys, threading, time, urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KEYS = dict(pair.split(":", 1) for pair in os.environ.get("CMKFS_TEST_AWS_KEYS", "").split(",") if ":" in pair)
UPSTREAM = sys.argv[2].rstrip("/")
STATE = {"throttle": 0, "deny": False, "stall": False, "deleted": []}
STATS = {}
LOCK = threading.Lock()
CRYPTO = {"Encrypt", "Decrypt", "ReEncrypt", "GenerateDataKey"}


def expected_signature(method, path, headers, body, auth):
    fields = dict(part.strip().split("=", 1) for part in auth[len("AWS4-HMAC-SHA256 "):].split(","))
    key_id, day, region, service, _ = fields["Credential"].split("/")
    signed = fields["SignedHeaders"].split(";")
    canonical_headers = "".join(f"{name}:{' '.join(headers.get(name, '').split())}\n" for name in signed)
    canonical = "\n".join([method, path, "", canonical_headers, ";".join(signed), hashlib.sha256(body).hexdigest()])
    to_sign = "\n".join(["AWS4-HMAC-SHA256", headers.get("x-amz-date", ""), f"{day}/{region}/{service}/aws4_request",
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + KEYS.get(key_id, "")).encode()
    for part in (day, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key_id, fields["Signature"], hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def upstream(target, payload):
    request = urllib.request.Request(UPSTREAM + "/", data=json.dumps(payload).encode(), method="POST", headers={
        "Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "TrentService." + target,
        "Authorization": "AWS4-HMAC-SHA256 Credential=proxy/20200101/us-east-1/kms/aws4_request, SignedHeaders=host, Signature=0"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read(), dict(answer.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read(), dict(error.headers)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body, request_id="proxy"):
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-amzn-RequestId", request_id)
        self.end_headers()
        self.wfile.write(body)

    def refuse(self, kind, message, status=400):
        self.reply(status, json.dumps({"__type": kind, "message": message}).encode())

    def do_GET(self):
        with LOCK:
            self.reply(200, json.dumps(STATS).encode())

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path == "/__fault":
            with LOCK:
                STATE.update(json.loads(body or b"{}"))
            return self.reply(200, b"{}")
        if STATE["stall"]:
            time.sleep(3600)
            return
        target = self.headers.get("X-Amz-Target", "").split(".")[-1]
        with LOCK:
            STATS[target] = STATS.get(target, 0) + 1
        headers = {k.lower(): v for k, v in self.headers.items()}
        key_id, given, wanted = expected_signature("POST", self.path, headers, body, headers.get("authorization", ""))
        if key_id not in KEYS:
            return self.refuse("UnrecognizedClientException", "The security token included in the request is invalid.")
        if not hmac.compare_digest(given, wanted):
            return self.refuse("InvalidSignatureException", "The request signature we calculated does not match the signature you provided.")
        payload = json.loads(body or b"{}")
        if STATE["deny"]:
            return self.refuse("AccessDeniedException", f"User is not authorized to perform: kms:{target}")
        if target in CRYPTO:
            with LOCK:
                throttled = STATE["throttle"] > 0
                STATE["throttle"] -= 1 if throttled else 0
            if throttled:
                return self.refuse("ThrottlingException", "Rate exceeded")
        key = payload.get("KeyId") or payload.get("DestinationKeyId")
        named = {k for k in (payload.get("KeyId"), payload.get("SourceKeyId"), payload.get("DestinationKeyId")) if k}
        if named & set(STATE["deleted"]):
            gone = sorted(named & set(STATE["deleted"]))[0]
            return self.refuse("NotFoundException", f"Key 'arn:aws:kms:us-east-1:123456789012:key/{gone}' does not exist")
        if target in CRYPTO | {"EnableKey"} and key:
            status, answer, _ = upstream("DescribeKey", {"KeyId": key})
            if status == 200:
                state = json.loads(answer)["KeyMetadata"]["KeyState"]
                if state == "Disabled" and target != "EnableKey":
                    return self.refuse("DisabledException", f"{key} is disabled.")
                if state == "PendingDeletion":
                    return self.refuse("KMSInvalidStateException", f"{key} is pending deletion.")
        status, answer, answer_headers = upstream(target, payload)
        if target == "Decrypt" and status == 400 and b"AccessDeniedException" in answer:
            return self.refuse("IncorrectKeyException", "The key ID in the request does not identify a KMS key that can perform this operation.")
        self.reply(status, answer, answer_headers.get("x-amzn-RequestId", "moto"))


server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
server.daemon_threads = True
print("ready", server.server_address[1], flush=True)
server.serve_forever()
