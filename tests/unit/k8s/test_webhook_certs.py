"""caBundle merging of the managed webhook certificates (loom.k8s.webhook_certs)."""

from __future__ import annotations

import base64
import datetime

from cryptography import x509

from loom.k8s.certs import generate_tls
from loom.k8s.webhook_certs import MAX_BUNDLE, merge_bundle

NOW = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)


def cas(bundle: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(base64.b64decode(bundle))


def test_a_new_ca_goes_first_and_still_valid_ones_stay_while_expired_ones_go() -> None:
    hour = datetime.timedelta(hours=1)
    old = generate_tls("svc", "ns", NOW - 2 * hour, validity=hour)  # expired at NOW
    live = generate_tls("svc", "ns", NOW, validity=hour)
    new = generate_tls("svc", "ns", NOW, validity=hour)
    bundle = base64.b64encode(old.ca_pem + live.ca_pem).decode()
    merged = cas(merge_bundle(bundle, new.ca_pem, NOW))
    assert merged == [
        x509.load_pem_x509_certificate(new.ca_pem),
        x509.load_pem_x509_certificate(live.ca_pem),
    ]
    assert cas(merge_bundle(merge_bundle("", new.ca_pem, NOW), new.ca_pem, NOW)) == merged[:1]
    assert cas(merge_bundle("not base64 pem", new.ca_pem, NOW)) == merged[:1]


def test_the_bundle_is_capped() -> None:
    bundle = ""
    for _ in range(MAX_BUNDLE + 3):
        bundle = merge_bundle(bundle, generate_tls("svc", "ns", NOW).ca_pem, NOW)
    assert len(cas(bundle)) == MAX_BUNDLE
