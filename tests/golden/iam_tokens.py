"""Golden IAM database auth tokens from the reference implementation (botocore/boto3).

Prints, as JSON, the tokens botocore's `generate_db_auth_token` (RDS, RDS Proxy) and boto3's DSQL
`generate_db_connect_auth_token` / `generate_db_connect_admin_auth_token` produce for fixed
credentials, region, host, port, user and clock. src/iam.rs's unit test compares its tokens with
tests/golden/iam-tokens.json byte for byte; `--check` verifies that file is what botocore makes now.

Run: .venv/bin/python tests/golden/iam_tokens.py [--check]
"""

from __future__ import annotations

import datetime
import json
import os
import sys
from pathlib import Path
from unittest import mock

# botocore's own SigV4 code, not awscrt's signer that it prefers when awscrt is installed (as
# with the SAM CLI): set before botocore is imported.
os.environ["BOTO_DISABLE_CRT"] = "true"

import boto3  # noqa: E402
import botocore.auth  # noqa: E402

GOLDEN = Path(__file__).with_name("iam-tokens.json")
AT = datetime.datetime(2026, 11, 25, 9, 30, 15, tzinfo=datetime.timezone.utc)
ACCESS_KEY = "AKIDEXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
SESSION_TOKEN = "IQoJb3JpZ2luX2VjEXAMPLE/session+token=="

CASES = [
    {"name": "rds-proxy", "mode": "rds-iam", "region": "eu-west-1", "session_token": None,
     "host": "users.proxy-c0ffee123456.eu-west-1.rds.amazonaws.com", "port": 5432, "user": "cognito_post_confirmation"},
    {"name": "rds-instance-with-session-token", "mode": "rds-iam", "region": "us-east-2", "session_token": SESSION_TOKEN,
     "host": "db-1.c0ffee123456.us-east-2.rds.amazonaws.com", "port": 6432, "user": "app user+é"},
    {"name": "dsql", "mode": "dsql-iam", "region": "us-east-1", "session_token": SESSION_TOKEN,
     "host": "abcdefghijklmnopqrst.dsql.us-east-1.on.aws", "port": 5432, "user": "cognito_post_confirmation"},
    {"name": "dsql-admin", "mode": "dsql-iam", "region": "us-east-1", "session_token": None,
     "host": "abcdefghijklmnopqrst.dsql.us-east-1.on.aws", "port": 5432, "user": "admin"},
]


def token(case: dict) -> str:
    session = boto3.session.Session(
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        aws_session_token=case["session_token"],
        region_name=case["region"],
    )
    with mock.patch.object(botocore.auth, "get_current_datetime", return_value=AT):
        if case["mode"] == "rds-iam":
            return session.client("rds").generate_db_auth_token(case["host"], case["port"], case["user"])
        client = session.client("dsql")
        if case["user"] == "admin":
            return client.generate_db_connect_admin_auth_token(case["host"], case["region"])
        return client.generate_db_connect_auth_token(case["host"], case["region"])


def golden() -> dict:
    return {
        "at_unix_seconds": int(AT.timestamp()),
        "access_key": ACCESS_KEY,
        "secret_key": SECRET_KEY,
        "cases": [dict(case, token=token(case)) for case in CASES],
    }


if __name__ == "__main__":
    text = json.dumps(golden(), indent=2, ensure_ascii=False) + "\n"
    if sys.argv[1:] == ["--check"]:
        if GOLDEN.read_text() != text:
            sys.exit(f"{GOLDEN} is not what botocore produces now; regenerate it with {sys.argv[0]} > {GOLDEN}")
        print(f"{GOLDEN.name}: matches botocore {botocore.__version__}")
    else:
        sys.stdout.write(text)
