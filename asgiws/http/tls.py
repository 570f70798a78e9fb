"""The ASGI `tls` extension (asgiref specs/tls.rst, version 0.2): what a connection's TLS is, for
`scope["extensions"]["tls"]` of every HTTP request and WebSocket on it.

Built once per TLS connection, when the handshake is done (`connection_made`), from the
transport's `ssl_object`; plain connections get no `tls` entry at all, as the spec requires.

- `server_cert`: the first certificate of --ssl-certfile, as PEM (read once per file); None when
  the TLS context came from elsewhere (gunicorn's settings).
- `client_cert_chain`: the client's certificate as PEM, then, on Python 3.13 and later, the rest
  of the chain the client sent (`get_unverified_chain`); before 3.13 the standard library shows
  only the client's own certificate, so the chain holds that one. Empty without a certificate.
- `client_cert_name`: its subject as an RFC 4514 string (most specific RDN first; the RFC 4514
  short names CN, L, ST, O, OU, C, STREET, DC, UID; other attributes under OpenSSL's names, as
  `openssl x509 -nameopt RFC2253` shows them, e.g. emailAddress).
- `client_cert_error`: always None. OpenSSL ends the handshake on a certificate that does not
  verify (with --ssl-cert-reqs 1 as with 2), so no connection with a bad one reaches the app.
- `tls_version`: 0x0303 (TLS 1.2) or 0x0304 (TLS 1.3).
- `cipher_suite`: the IANA number, exact: OpenSSL's cipher ids are 0x0300XXXX with the IANA
  number in the low 16 bits, and `SSLContext.get_ciphers()` maps its names to them.
"""

from __future__ import annotations

import ssl
from typing import Any, Dict, List, Optional

TLS_VERSIONS = {"TLSv1": 0x0301, "TLSv1.1": 0x0302, "TLSv1.2": 0x0303, "TLSv1.3": 0x0304}

# RFC 4514 §3: the attribute types with a short name; Python reports OpenSSL's long names.
RFC4514_NAMES = {
    "commonName": "CN", "localityName": "L", "stateOrProvinceName": "ST", "organizationName": "O",
    "organizationalUnitName": "OU", "countryName": "C", "streetAddress": "STREET",
    "domainComponent": "DC", "userId": "UID",
}  # fmt: skip

_cipher_ids: Dict[str, int] = {}
_server_certs: Dict[str, Optional[str]] = {}


def tls_extension(ssl_object: Any, certfile: Optional[str]) -> Dict[str, Any]:
    chain: List[str] = []
    name = None
    leaf = ssl_object.getpeercert(binary_form=True)
    if leaf:
        chain.append(ssl.DER_cert_to_PEM_cert(leaf))
        getter = getattr(ssl_object, "get_unverified_chain", None)  # Python 3.13+
        if getter is not None:
            for cert in getter() or ():
                der = cert if isinstance(cert, bytes) else cert.public_bytes(ssl._ssl.ENCODING_DER)  # type: ignore[attr-defined]  # the encoding constant is only in the private module
                if der != leaf:  # OpenSSL leaves the leaf out of a server's peer chain; some builds do not
                    chain.append(ssl.DER_cert_to_PEM_cert(der))
        subject = (ssl_object.getpeercert() or {}).get("subject")
        if subject:
            name = rfc4514_name(subject)
    cipher = ssl_object.cipher()
    return {
        "server_cert": server_cert(certfile) if certfile else None,
        "client_cert_chain": chain,
        "client_cert_name": name,
        "client_cert_error": None,
        "tls_version": TLS_VERSIONS.get(ssl_object.version()),
        "cipher_suite": cipher_suite(cipher[0]) if cipher else None,
    }


def rfc4514_name(subject: Any) -> str:
    """`getpeercert()["subject"]` (RDNs, least specific first) → an RFC 4514 string."""
    rdns = []
    for rdn in reversed(subject):
        rdns.append("+".join(f"{RFC4514_NAMES.get(kind, kind)}={_escape(value)}" for kind, value in rdn))
    return ",".join(rdns)


def _escape(value: str) -> str:
    """RFC 4514 §2.4: escape the specials, a leading space or #, a trailing space."""
    out = "".join("\\" + ch if ch in '"+,;<>\\' else ("\\00" if ch == "\0" else ch) for ch in value)
    if out.startswith((" ", "#")):
        out = "\\" + out
    if out.endswith(" ") and not out.endswith("\\ "):
        out = out[:-1] + "\\ "
    return out


def cipher_suite(name: str) -> Optional[int]:
    if not _cipher_ids:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.set_ciphers("ALL:@SECLEVEL=0")  # every TLS 1.2 suite this OpenSSL knows; 1.3's are always listed
        for entry in context.get_ciphers():
            _cipher_ids[entry["name"]] = entry["id"] & 0xFFFF
    return _cipher_ids.get(name)


def server_cert(certfile: str) -> Optional[str]:
    """The first PEM certificate in `certfile` (its leaf), read once per process."""
    if certfile not in _server_certs:
        try:
            with open(certfile, encoding="ascii", errors="replace") as file:
                text = file.read()
        except OSError:
            pem = None
        else:
            begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
            start = text.find(begin)
            stop = text.find(end, start)
            pem = text[start:stop + len(end)] + "\n" if start >= 0 and stop >= 0 else None
        _server_certs[certfile] = pem
    return _server_certs[certfile]
