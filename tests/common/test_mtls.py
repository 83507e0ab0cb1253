"""mTLS: the caller is the client certificate's identity, without one the call is refused, and the
plaintext health port answers kubelet probes."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tessera.consent.v1 import consent_pb2 as cpb
from tessera.consent.v1 import consent_pb2_grpc

from services.common.falkordb_server import free_port
from tests.conftest import Stack


def _cert(name: str, issuer_key, issuer_name, *, ca: bool = False, key=None):
    key = key or ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name or subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        # The first SAN names the caller; every test service also answers on localhost.
        sans = [x509.DNSName(name)] + ([x509.DNSName("localhost")] if name != "localhost" else [])
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(issuer_key or key, hashes.SHA256())
    pem = lambda k: k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,  # noqa: E731
                                    serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), pem(key), key, subject


@pytest.fixture
def pki(tmp_path):
    ca_pem, _ca_key_pem, ca_key, ca_name = _cert("tessera-test-ca", None, None, ca=True)
    files = {"ca": tmp_path / "ca.pem"}
    files["ca"].write_bytes(ca_pem)
    for name in ("localhost", "crm-mailer", "tessera-consent"):
        cert, key, _k, _s = _cert(name, ca_key, ca_name)
        (tmp_path / f"{name}.crt").write_bytes(cert)
        (tmp_path / f"{name}.key").write_bytes(key)
    for kind in ("kek", "blind"):
        (tmp_path / kind).write_bytes(bytes(range(32)))
    return tmp_path


def test_mtls_caller_identity_and_health_port(pki, graph_uri, graph_name):
    policy = pki / "policy.yaml"
    policy.write_text("callers:\n  crm-mailer: {purposes: [newsletter-email]}\n"
                      "  tessera-consent: {purposes: ['*']}\n  localhost: {purposes: []}\n")
    health_port = free_port()

    def tls(name: str, **more) -> dict:
        return {"tls_cert_file": str(pki / f"{name}.crt"), "tls_key_file": str(pki / f"{name}.key"),
                "tls_client_ca_file": str(pki / "ca.pem"), "host": "localhost", **more}

    # Each service presents its own certificate, also when it calls a sibling.
    stack = Stack(pki / "home", graph_uri, graph_name,
                  server={"identity": tls("localhost"), "consent": tls("tessera-consent", health_port=health_port)},
                  auth={"mode": "mtls", "policy_file": str(policy)},
                  crypto={"kek_file": str(pki / "kek"), "blind_index_key_file": str(pki / "blind")})
    stack.client_host = "localhost"  # the name the certificates carry
    try:
        stack.start("identity")
        stack.start("consent")

        def channel(name: str) -> grpc.Channel:
            creds = grpc.ssl_channel_credentials(root_certificates=(pki / "ca.pem").read_bytes(),
                                                 private_key=(pki / f"{name}.key").read_bytes(),
                                                 certificate_chain=(pki / f"{name}.crt").read_bytes())
            return grpc.secure_channel(f"localhost:{stack.ports['consent']}", creds)

        mailer = consent_pb2_grpc.ConsentServiceStub(channel("crm-mailer"))
        request = cpb.CheckConsentRequest(subject={"account": {"source": "webshop", "external_id": "m1"}},
                                          purpose="purposes/newsletter-email")
        assert mailer.CheckConsent(request, timeout=10).reason == "no_consent_recorded"
        with pytest.raises(grpc.RpcError) as err:
            mailer.CheckConsent(cpb.CheckConsentRequest(subject=request.subject, purpose="purposes/sms-marketing"),
                                timeout=10)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        other = consent_pb2_grpc.ConsentServiceStub(channel("localhost"))
        with pytest.raises(grpc.RpcError) as err:
            other.CheckConsent(request, timeout=10)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        anonymous = grpc.secure_channel(f"localhost:{stack.ports['consent']}",
                                        grpc.ssl_channel_credentials(root_certificates=(pki / "ca.pem").read_bytes()))
        with pytest.raises(grpc.RpcError) as err:
            consent_pb2_grpc.ConsentServiceStub(anonymous).CheckConsent(request, timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE  # the TLS handshake refuses it
        probe = health_pb2_grpc.HealthStub(grpc.insecure_channel(f"localhost:{health_port}"))
        status = probe.Check(health_pb2.HealthCheckRequest(service="tessera.consent.v1.ConsentService"), timeout=10)
        assert status.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        stack.stop()
