"""JSON Web Tokens made by another implementation (PyJWT with cryptography),
for the hub's token verification tests (crates/duplex-cli/tests/auth.rs).

    tokens.py make DIR --issuer ISS --audience AUD --leeway SECS
        Generates keys in DIR (RSA 2048, EC P-256, EC P-384, Ed25519, an HMAC
        secret; a second RSA 2048 key and a P-256 key for the JWKS), writes
        the public keys as PEM (rsa.pem, p256.pem, p384.pem, ed25519.pem),
        two JWKS documents (jwks1.json: kid1, an RSA key for RS256;
        jwks2.json: kid2, a P-256 key for ES256, kid1 retired), and prints
        one JSON object on stdout with the secret and the tokens:
          "accepted": a token for every algorithm, and tokens inside the
              clock leeway, each with the sub "user-<NAME>";
          "refused": the attacks, each with the check the hub must name;
          "jwks": tokens for the JWKS keys, 50 tokens with unknown kids.

    tokens.py serve DIR
        Serves DIR over HTTP on 127.0.0.1 (a free port), prints
        "listening on PORT" and then one line per request ("GET /path").
"""

import base64
import hashlib
import hmac
import http.server
import json
import secrets
import sys
import time
from functools import partial
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode())


def public_pem(key) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def make(directory: Path, issuer: str, audience: str, leeway: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    now = int(time.time())
    # 64 bytes: long enough for HS512 (RFC 7518 section 3.2).
    secret = secrets.token_urlsafe(48)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    p256 = ec.generate_private_key(ec.SECP256R1())
    p384 = ec.generate_private_key(ec.SECP384R1())
    ed = ed25519.Ed25519PrivateKey.generate()
    for name, key in [
        ("rsa.pem", rsa_key),
        ("p256.pem", p256),
        ("p384.pem", p384),
        ("ed25519.pem", ed),
    ]:
        (directory / name).write_bytes(public_pem(key))

    def claims(name, **more):
        base = {
            "sub": f"user-{name}",
            "iss": issuer,
            "aud": audience,
            "iat": now,
            "exp": now + 3600,
        }
        base.update(more)
        return {k: v for k, v in base.items() if v is not None}

    signers = {
        "HS256": secret,
        "HS384": secret,
        "HS512": secret,
        "RS256": rsa_key,
        "RS384": rsa_key,
        "RS512": rsa_key,
        "PS256": rsa_key,
        "PS384": rsa_key,
        "PS512": rsa_key,
        "ES256": p256,
        "ES384": p384,
        "EdDSA": ed,
    }
    accepted = {
        alg: jwt.encode(claims(alg), key, algorithm=alg) for alg, key in signers.items()
    }
    # Inside the leeway: a few seconds past exp, a few seconds before nbf.
    accepted["exp_within_leeway"] = jwt.encode(
        claims("exp_within_leeway", exp=now - 3), rsa_key, algorithm="RS256"
    )
    accepted["nbf_within_leeway"] = jwt.encode(
        claims("nbf_within_leeway", nbf=now + 3), p256, algorithm="ES256"
    )

    refused = {}
    # alg none: PyJWT writes it (an empty signature); the hand-made one
    # differs in case, as attackers try.
    refused["alg_none"] = jwt.encode(claims("alg_none"), None, algorithm="none")
    refused["alg_none_by_hand"] = (
        f"{b64json({'alg': 'None', 'typ': 'JWT'})}.{b64json(claims('alg_none'))}."
    )
    # The HS/RS confusion: an HS256 token whose HMAC key is the RSA public
    # key's PEM (PyJWT refuses to do this, so by hand).
    signing_input = f"{b64json({'alg': 'HS256', 'typ': 'JWT'})}.{b64json(claims('confused'))}"
    mac = hmac.new(public_pem(rsa_key), signing_input.encode(), hashlib.sha256).digest()
    refused["hs256_with_rsa_public_key"] = f"{signing_input}.{b64(mac)}"
    refused["expired"] = jwt.encode(
        claims("expired", exp=now - leeway - 60), rsa_key, algorithm="RS256"
    )
    refused["not_yet_valid"] = jwt.encode(
        claims("not_yet_valid", nbf=now + leeway + 60), ed, algorithm="EdDSA"
    )
    refused["wrong_audience"] = jwt.encode(
        claims("wrong_audience", aud="someone-else"), p384, algorithm="ES384"
    )
    refused["no_audience"] = jwt.encode(
        claims("no_audience", aud=None), secret, algorithm="HS256"
    )
    refused["wrong_issuer"] = jwt.encode(
        claims("wrong_issuer", iss="https://evil.example"), rsa_key, algorithm="PS256"
    )
    refused["no_issuer"] = jwt.encode(claims("no_issuer", iss=None), secret, algorithm="HS512")
    # Tampered payload: a signed token's signature on another payload.
    honest = jwt.encode(claims("tampered"), rsa_key, algorithm="RS256")
    header, _, signature = honest.split(".")
    forged = b64json(claims("admin"))
    refused["tampered_payload"] = f"{header}.{forged}.{signature}"
    # Signed by a key the hub does not have.
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    refused["unknown_signer"] = jwt.encode(claims("stranger"), stranger, algorithm="RS256")

    # The JWKS keys, rotated: set 1 has kid1, set 2 kid2 (kid1 retired).
    kid1_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    kid2_key = ec.generate_private_key(ec.SECP256R1())
    jwk1 = json.loads(RSAAlgorithm.to_jwk(kid1_key.public_key()))
    jwk1.update({"kid": "kid1", "alg": "RS256", "use": "sig"})
    jwk2 = json.loads(ECAlgorithm.to_jwk(kid2_key.public_key()))
    jwk2.update({"kid": "kid2", "alg": "ES256", "use": "sig"})
    (directory / "jwks1.json").write_text(json.dumps({"keys": [jwk1]}))
    (directory / "jwks2.json").write_text(json.dumps({"keys": [jwk2]}))
    signing_input = f"{b64json({'alg': 'HS256', 'typ': 'JWT', 'kid': 'kid1'})}.{b64json(claims('confused'))}"
    mac = hmac.new(public_pem(kid1_key), signing_input.encode(), hashlib.sha256).digest()
    jwks = {
        "kid1": jwt.encode(claims("kid1"), kid1_key, algorithm="RS256", headers={"kid": "kid1"}),
        "kid2": jwt.encode(claims("kid2"), kid2_key, algorithm="ES256", headers={"kid": "kid2"}),
        # kid2's key named as kid1: the kid picks the key, which does not take ES256.
        "kid2_key_as_kid1": jwt.encode(
            claims("kid2"), kid2_key, algorithm="ES256", headers={"kid": "kid1"}
        ),
        "hs256_with_kid1_public_key": f"{signing_input}.{b64(mac)}",
        "unknown_kids": [
            jwt.encode(
                claims("flood"),
                kid1_key,
                algorithm="RS256",
                headers={"kid": secrets.token_hex(8)},
            )
            for _ in range(50)
        ],
    }
    json.dump(
        {
            "secret": secret,
            "public_keys": ["rsa.pem", "p256.pem", "p384.pem", "ed25519.pem"],
            "accepted": accepted,
            "refused": refused,
            "jwks": jwks,
        },
        sys.stdout,
    )
    sys.stdout.write("\n")


class Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass

    def log_request(self, code="-", size="-"):
        print(f"{self.command} {self.path} {code}", flush=True)


def serve(directory: Path) -> None:
    server = http.server.HTTPServer(
        ("127.0.0.1", 0), partial(Handler, directory=str(directory))
    )
    print(f"listening on {server.server_address[1]}", flush=True)
    server.serve_forever()


def main(argv) -> int:
    if len(argv) >= 2 and argv[0] == "serve":
        serve(Path(argv[1]))
        return 0
    if len(argv) >= 2 and argv[0] == "make":
        options = dict(zip(argv[2::2], argv[3::2]))
        make(
            Path(argv[1]),
            options.get("--issuer", "https://issuer.test"),
            options.get("--audience", "duplex"),
            int(options.get("--leeway", "30")),
        )
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
