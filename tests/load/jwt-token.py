"""Prints an HS256 token for the identifiers {"user": "bench"}, valid for two hours, signed with SECRET.

    python3 tests/load/jwt-token.py SECRET

Made here with Python's own hmac, independently of the server's code, for the load scripts' JWT clients.
"""
import base64
import hashlib
import hmac
import json
import sys
import time


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


secret = sys.argv[1].encode()
head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
body = b64(json.dumps({"ext": json.dumps({"user": "bench"}), "exp": int(time.time()) + 7200}).encode())
sig = b64(hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest())
print(f"{head}.{body}.{sig}")
