"""A real AWS client for the tests: boto3's elbv2 client (and aws-cli) against an
albatross admin listener, driven over stdin/stdout one JSON line at a time.

    python3 driver.py ENDPOINT [ACCESS_KEY_ID SECRET_ACCESS_KEY]

Each request line is one of
    {"op": "register_targets", "args": {...}}          a boto3 call
    {"wait": "target_in_service", "args": {...}}       a botocore waiter (1 s delay)
    {"paginate": "describe_rules", "args": {...}, "key": "Rules"}
    {"cli": ["elbv2", "describe-load-balancers"]}      aws-cli with the endpoint
    {"burst": [{"op": ..., "args": ...}, ...], "times": N}
                                                       N calls cycling through the list
    {"stale": "describe_load_balancers"}               a call signed 20 minutes ago
and each answer line is {"ok": result} or {"error": {"code", "message", "status"}}.
"""

import datetime
import json
import os
import subprocess
import sys
import time
from unittest import mock

import boto3
import botocore.auth
from botocore.config import Config
from botocore.exceptions import ClientError, WaiterError


def client(endpoint, key, secret):
    return boto3.client(
        "elbv2",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1, "mode": "standard"}),
    )


def error_of(e):
    if isinstance(e, ClientError):
        err = e.response.get("Error", {})
        return {
            "code": err.get("Code"),
            "message": err.get("Message"),
            "status": e.response.get("ResponseMetadata", {}).get("HTTPStatusCode"),
            "exception": type(e).__name__,
        }
    if isinstance(e, WaiterError):
        return {"code": "WaiterError", "message": str(e), "status": None}
    return {"code": type(e).__name__, "message": str(e), "status": None}


def plain(value):
    """Results as JSON (timestamps as text, response metadata dropped)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items() if k != "ResponseMetadata"}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    return value


def run(elbv2, endpoint, key, secret, line):
    req = json.loads(line)
    if "op" in req:
        return plain(getattr(elbv2, req["op"])(**req.get("args", {})))
    if "wait" in req:
        waiter = elbv2.get_waiter(req["wait"])
        args = dict(req.get("args", {}))
        args["WaiterConfig"] = {"Delay": 1, "MaxAttempts": req.get("attempts", 30)}
        started = time.monotonic()
        waiter.wait(**args)
        return {"seconds": round(time.monotonic() - started, 2)}
    if "paginate" in req:
        paginator = elbv2.get_paginator(req["paginate"])
        pages = list(paginator.paginate(**req.get("args", {})))
        return {
            "pages": len(pages),
            "items": [plain(i) for p in pages for i in p[req["key"]]],
        }
    if "cli" in req:
        env = dict(os.environ)
        env.update(
            AWS_ACCESS_KEY_ID=key,
            AWS_SECRET_ACCESS_KEY=secret,
            AWS_DEFAULT_REGION="us-east-1",
            AWS_MAX_ATTEMPTS="1",
            AWS_PAGER="",
        )
        argv = ["aws", *req["cli"], "--endpoint-url", endpoint, "--output", "json"]
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"aws-cli exited {proc.returncode}: {proc.stderr.strip()}")
        return json.loads(proc.stdout) if proc.stdout.strip() else None
    if "burst" in req:
        calls, times = req["burst"], req["times"]
        failures = []
        for i in range(times):
            call = calls[i % len(calls)]
            try:
                getattr(elbv2, call["op"])(**call.get("args", {}))
            except Exception as e:  # every failure is reported, none stops the burst
                failures.append(error_of(e))
        return {"calls": times, "failures": failures}
    if "stale" in req:
        stale = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=20)
        with mock.patch.object(botocore.auth, "get_current_datetime", return_value=stale):
            return plain(getattr(elbv2, req["stale"])(**req.get("args", {})))
    raise ValueError(f"unknown request: {line}")


def main():
    endpoint = sys.argv[1]
    key = sys.argv[2] if len(sys.argv) > 2 else "AKIDALBATROSS"
    secret = sys.argv[3] if len(sys.argv) > 3 else "any-secret"
    elbv2 = client(endpoint, key, secret)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            answer = {"ok": run(elbv2, endpoint, key, secret, line)}
        except Exception as e:  # reported to the test, which decides
            answer = {"error": error_of(e)}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
