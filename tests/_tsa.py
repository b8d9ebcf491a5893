"""A local RFC 3161 timestamp authority for tests: `openssl ts -reply` behind a tiny ASGI app."""

from __future__ import annotations

import asyncio
import datetime
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from _serve import serve
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_tsa_pki(folder: Path, name: str = "Test TSA") -> tuple[x509.Certificate, Path]:
    """A root CA and a TSA certificate it issued (timeStamping, critical); returns the root and the
    openssl ts configuration file."""
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name(f"{name} Root")).issuer_name(_name(f"{name} Root"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    tsa_key = ec.generate_private_key(ec.SECP256R1())
    tsa = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(ca.subject)
           .public_key(tsa_key.public_key()).serial_number(x509.random_serial_number())
           .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=30))
           .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
           .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=False,
                                        data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                        crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
           .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
           .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
           .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    (folder / "ca.pem").write_bytes(ca.public_bytes(pem))
    (folder / "tsa.pem").write_bytes(tsa.public_bytes(pem))
    (folder / "tsa.key").write_bytes(tsa_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()))
    (folder / "serial").write_text("01\n")
    config = folder / "tsa.cnf"
    config.write_text(f"""[ tsa ]
default_tsa = tsa_config1
[ tsa_config1 ]
dir = {folder}
serial = $dir/serial
crypto_device = builtin
signer_cert = $dir/tsa.pem
certs = $dir/tsa.pem
signer_key = $dir/tsa.key
signer_digest = sha256
default_policy = 1.2.3.4.1
digests = sha256, sha384, sha512
accuracy = secs:1
ordering = yes
tsa_name = yes
ess_cert_id_chain = no
ess_cert_id_alg = sha256
""")
    return ca, config


class TSAApp:
    """POST a DER TimeStampReq, get `openssl ts -reply`'s DER TimeStampResp."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.requests = 0
        self.down = False

    def _reply(self, query: bytes) -> bytes:
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "q.tsq").write_bytes(query)
            subprocess.run(["openssl", "ts", "-reply", "-config", str(self.config), "-queryfile",
                            str(Path(tmp) / "q.tsq"), "-out", str(Path(tmp) / "r.tsr")],
                           check=True, capture_output=True, timeout=30)
            return (Path(tmp) / "r.tsr").read_bytes()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.requests += 1
        if self.down:
            status, reply = 503, b"down"
        else:
            status, reply = 200, await asyncio.to_thread(self._reply, body)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/timestamp-reply")]})
        await send({"type": "http.response.body", "body": reply})


@contextmanager
def local_tsa(folder: Path, name: str = "Test TSA") -> Iterator[tuple[str, x509.Certificate, TSAApp]]:
    """Serve a TSA on a loopback port; yield its URL, its root certificate and the app."""
    folder.mkdir(parents=True, exist_ok=True)
    root, config = make_tsa_pki(folder, name)
    app = TSAApp(config)
    with serve(app, "tsa") as url:
        yield url + "/tsa", root, app
