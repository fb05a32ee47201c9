"""RFC 3161 time-stamps for the ledger checkpoints: ask a TSA, check what it answered.

The request and the reply are built and read with ``asn1crypto.tsp`` (the ASN.1
library pyHanko, oscrypto and many PDF signers build on: stable, pure Python, no
native code); the TSA's CMS signature is checked with ``cryptography``. Shelling
out to ``openssl ts`` would tie the worker to a binary a container may not have;
``openssl ts -verify`` stays the outsider's tool (README "Ledger checkpoints").
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

import requests
from asn1crypto import cms, tsp
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

#: The reply's content type (RFC 3161 §3.4).
REPLY_TYPE = "application/timestamp-reply"
_HASHES: dict[str, hashes.HashAlgorithm] = {
    "sha256": hashes.SHA256(), "sha384": hashes.SHA384(), "sha512": hashes.SHA512(),
    "sha1": hashes.SHA1()}  # noqa: S303 (what some TSAs still sign with; the imprint is SHA-256)


class TimestampError(Exception):
    """The TSA could not be reached, refused, or answered something that does not check."""


@dataclass(frozen=True)
class TokenInfo:
    """What a checked token says: when, and who signed it."""

    gen_time: datetime
    tsa: str  # the signer certificate's subject
    serial: int


def request_token(url: str, data: bytes, *, timeout: float = 10.0) -> bytes:
    """Time-stamp SHA-256(``data``) at the TSA ``url``; the token (DER), checked.

    The request asks for the TSA's certificate in the token, so the token can
    be checked with nothing else, and carries a nonce the reply must repeat.
    """
    digest = hashlib.sha256(data).digest()
    nonce = secrets.randbits(63)
    request = tsp.TimeStampReq({
        "version": 1,
        "message_imprint": {"hash_algorithm": {"algorithm": "sha256"}, "hashed_message": digest},
        "nonce": nonce,
        "cert_req": True,
    })
    try:
        answer = requests.post(url, data=request.dump(), timeout=timeout,
                               headers={"Content-Type": "application/timestamp-query"})
    except requests.RequestException as exc:
        raise TimestampError(f"TSA not reachable ({type(exc).__name__})") from None
    if answer.status_code != 200:
        raise TimestampError(f"TSA answered HTTP {answer.status_code}")
    try:
        reply = tsp.TimeStampResp.load(answer.content)
        status = reply["status"]["status"].native
        token = reply["time_stamp_token"]
    except (ValueError, TypeError, KeyError) as exc:
        raise TimestampError(f"TSA answered no RFC 3161 reply ({type(exc).__name__})") from None
    if status not in ("granted", "granted_with_mods") or token.native is None:
        raise TimestampError(f"TSA refused the request (status {status})")
    der = token.dump()
    check_token(der, data, nonce=nonce)
    return der


def check_token(der: bytes, data: bytes, *, nonce: int | None = None) -> TokenInfo:
    """Check that token ``der`` time-stamps SHA-256(``data``) and that its CMS signature
    verifies with the signer certificate it carries; raise :class:`TimestampError` if not.

    Whether that certificate belongs to a TSA you trust is a question for its
    certificate chain (``openssl ts -verify -CAfile``), not for this service.
    """
    try:
        content = cms.ContentInfo.load(der)
        signed = content["content"]
        tst = signed["encap_content_info"]["content"].parsed
        info = tst.native
        imprint = tst["message_imprint"]
        algorithm = imprint["hash_algorithm"]["algorithm"].native
        expected = hashlib.new(algorithm, data).digest()
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise TimestampError(f"not an RFC 3161 token ({type(exc).__name__})") from None
    if imprint["hashed_message"].native != expected:
        raise TimestampError("the token time-stamps other data")
    if nonce is not None and info["nonce"] != nonce:
        raise TimestampError("the reply does not repeat the request's nonce")
    subject = _check_signature(signed, tst.dump())
    return TokenInfo(gen_time=info["gen_time"], tsa=subject, serial=info["serial_number"])


def _check_signature(signed: cms.SignedData, tst_der: bytes) -> str:
    """Verify the signer's signature over its signed attributes, and that those cover the
    TSTInfo; return the signer certificate's subject."""
    try:
        signer = signed["signer_infos"][0]
        sid = signer["sid"].chosen
        certificate = next(
            c.chosen for c in signed["certificates"]
            if c.name == "certificate"
            and c.chosen.issuer == sid["issuer"]
            and c.chosen.serial_number == sid["serial_number"].native)
        digest_name = signer["digest_algorithm"]["algorithm"].native
        attrs = signer["signed_attrs"]
        digests = [a["values"][0].native for a in attrs if a["type"].native == "message_digest"]
        if digests != [hashlib.new(digest_name, tst_der).digest()]:
            raise TimestampError("the token's signed attributes do not cover its content")
        cert = x509.load_der_x509_certificate(certificate.dump())
        key = cert.public_key()
        algorithm = _HASHES[digest_name]
        signature, message = signer["signature"].native, attrs.untag().dump()
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, message, padding.PKCS1v15(), algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, message, ec.ECDSA(algorithm))
        else:
            raise TimestampError(f"unsupported TSA key type {type(key).__name__}")
    except InvalidSignature:
        raise TimestampError("the TSA's signature does not verify") from None
    except (StopIteration, KeyError, ValueError, TypeError, IndexError) as exc:
        raise TimestampError(f"the token's signature cannot be checked ({type(exc).__name__})") from None
    return cert.subject.rfc4514_string()
