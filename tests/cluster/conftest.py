"""Fixtures of the cluster tests: ``s3``, a real S3-compatible server per module (:mod:`tests.cluster.s3_server`)."""

from __future__ import annotations

import pytest

from tests.cluster.s3_server import s3_server


@pytest.fixture(scope="module")
def s3():
    """moto's S3 server for this module's tests; the AWS_* environment that points at it."""
    with s3_server() as env:
        yield env
