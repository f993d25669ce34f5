"""A private CA for a one-machine (or one-lab) start: `cynode-orchestrator certs init`.

Writes into one directory:

- `ca.pem` / `ca.key`: the CA (the key never leaves this directory; mode 0600);
- `server.pem` / `server.key`: the orchestrator's certificate for the given names
  (DNS names or IP addresses), used by all four listeners;
- `node-<slug>.pem` / `node-<slug>.key` per `--node`: a node's certificate, usable both
  as its client certificate (mTLS to the control plane) and as the worker API's server
  certificate.

Nodes pin `ca.pem` (`orchestrator.ca_file`); the SHA-256 fingerprint printed by
`certs init` lets an operator check the copy a node got. Everything is made with the
`cryptography` package, never by shelling out to openssl.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT = "ca.pem"
CA_KEY = "ca.key"
SERVER_CERT = "server.pem"
SERVER_KEY = "server.key"
CA_DAYS = 3650
# Browsers cap leaf lifetimes near this; long enough for a lab, short enough to rotate.
LEAF_DAYS = 825
# A little slack for hosts whose clocks disagree by a minute or two.
BACKDATE = timedelta(minutes=5)
DEFAULT_NAMES = ("localhost", "127.0.0.1", "::1")


class CertsError(ValueError):
    """The CA directory or a requested name is unusable."""


@dataclass(frozen=True)
class KeyPair:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def write(self, cert_path: Path, key_path: Path) -> None:
        _write_private(key_path, self.key_pem())
        cert_path.write_bytes(self.cert_pem())


@dataclass(frozen=True)
class InitResult:
    directory: Path
    fingerprint: str
    server_names: tuple[str, ...]
    nodes: tuple[str, ...]


def fingerprint(cert_pem: bytes) -> str:
    """SHA-256 over the DER form, as `AB:CD:...` (what `openssl x509 -fingerprint` says)."""
    der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    path.chmod(0o600)  # an older file keeps its mode through O_TRUNC


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        pass
    if not name or any(c.isspace() for c in name) or "/" in name:
        raise CertsError(f"not a host name or IP address: {name!r}")
    return x509.DNSName(name)


def _window(not_before: datetime | None, days: int) -> tuple[datetime, datetime]:
    start = not_before or datetime.now(UTC) - BACKDATE
    return start, start + timedelta(days=days)


def make_ca(
    common_name: str = "CyNode private CA",
    *,
    days: int = CA_DAYS,
    not_before: datetime | None = None,
) -> KeyPair:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    start, end = _window(not_before, days)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert, key)


def issue(
    ca: KeyPair,
    common_name: str,
    names: Sequence[str],
    *,
    server: bool = True,
    client: bool = False,
    days: int = LEAF_DAYS,
    not_before: datetime | None = None,
) -> KeyPair:
    """A leaf certificate signed by `ca`, for `names` (DNS names or IPs, as SANs)."""
    if not names:
        raise CertsError("a certificate needs at least one name")
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] if server else []
    if client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    key = ec.generate_private_key(ec.SECP256R1())
    start, end = _window(not_before, days)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([_san(n) for n in names]), critical=False)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )
    return KeyPair(cert, key)


def load_ca(directory: Path) -> KeyPair:
    try:
        cert = x509.load_pem_x509_certificate((directory / CA_CERT).read_bytes())
        key = serialization.load_pem_private_key((directory / CA_KEY).read_bytes(), None)
    except OSError as exc:
        raise CertsError(f"no CA in {directory}: {exc.strerror} ({exc.filename})") from exc
    except ValueError as exc:
        raise CertsError(f"the CA in {directory} cannot be read") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertsError(f"{directory / CA_KEY} is not an EC key")
    return KeyPair(cert, key)


def node_paths(directory: Path, slug: str) -> tuple[Path, Path]:
    if not slug or "/" in slug or slug.startswith("."):
        raise CertsError(f"not a usable node slug: {slug!r}")
    return directory / f"node-{slug}.pem", directory / f"node-{slug}.key"


def issue_node(directory: Path, slug: str, names: Sequence[str] = ()) -> tuple[Path, Path]:
    """A node certificate (client auth for mTLS, server auth for its worker API)."""
    ca = load_ca(directory)
    cert_path, key_path = node_paths(directory, slug)
    issue(ca, slug, [slug, *names], server=True, client=True).write(cert_path, key_path)
    return cert_path, key_path


def init_certs(
    directory: Path,
    names: Sequence[str] = DEFAULT_NAMES,
    *,
    nodes: Sequence[str] = (),
    force: bool = False,
) -> InitResult:
    """Creates the CA (unless one is there: it is reused, so nodes keep trusting it),
    the orchestrator's server certificate for `names`, and one certificate per node."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    if (directory / CA_CERT).exists() and not force:
        ca = load_ca(directory)
    else:
        ca = make_ca()
        ca.write(directory / CA_CERT, directory / CA_KEY)
    names = tuple(dict.fromkeys(names)) or DEFAULT_NAMES
    issue(ca, names[0], names).write(directory / SERVER_CERT, directory / SERVER_KEY)
    for slug in nodes:
        issue_node(directory, slug)
    return InitResult(directory, fingerprint(ca.cert_pem()), names, tuple(nodes))
