"""Keys, certificates and settings shared by the webhook tests.

Keys are generated once per session (RSA generation is the slow part); the SNS certificate
cache is emptied around every test, so one test's certificate never serves another's.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from dagster_project.webhooks import WebhookSettings
from dagster_project.webhooks.sns import clear_certificate_cache
from tests.support.webhook_signing import (
    SES_TOPIC_ARN,
    SNS_CERT_URL,
    CertificateFetcher,
    sendgrid_keypair,
    sns_certificate,
    svix_secret,
)

POSTMARK_USER = "postmark-hooks"
POSTMARK_PASSWORD = "correct-horse-battery-staple-42"
NUDGE_SECRET = "nudge-webhook-secret-0123456789abcdef"
RESEND_SECRET = svix_secret()


@pytest.fixture(autouse=True)
def _fresh_certificate_cache() -> Iterator[None]:
    clear_certificate_cache()
    yield
    clear_certificate_cache()


@pytest.fixture(scope="session")
def sendgrid_keys() -> tuple[ec.EllipticCurvePrivateKey, str]:
    return sendgrid_keypair()


@pytest.fixture(scope="session")
def sns_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def sns_pem(sns_key: rsa.RSAPrivateKey) -> bytes:
    return sns_certificate(key=sns_key)[1]


@pytest.fixture
def fetcher(sns_pem: bytes) -> CertificateFetcher:
    return CertificateFetcher({SNS_CERT_URL: sns_pem})


@pytest.fixture
def settings(sendgrid_keys: tuple[ec.EllipticCurvePrivateKey, str]) -> WebhookSettings:
    """Every provider configured, read the way the web service reads them."""
    return WebhookSettings.from_env(
        {
            "NUDGE_SENDGRID_WEBHOOK_PUBLIC_KEY": sendgrid_keys[1],
            "NUDGE_POSTMARK_WEBHOOK_USER": POSTMARK_USER,
            "NUDGE_POSTMARK_WEBHOOK_PASSWORD": POSTMARK_PASSWORD,
            "NUDGE_SES_TOPIC_ARNS": f" {SES_TOPIC_ARN} , arn:aws:sns:us-east-1:1:other,",
            "NUDGE_RESEND_WEBHOOK_SECRET": RESEND_SECRET,
            "NUDGE_WEBHOOK_SECRET": NUDGE_SECRET,
        }
    )
