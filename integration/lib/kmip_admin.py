"""The operator's side of the KMIP tests, through PyKMIP's own client (not polykms' code):
create and activate keys, revoke and destroy them, and decrypt / encrypt polykms wraps
independently, which checks that polykms speaks real KMIP AES-GCM.

    python kmip_admin.py create NAME          -> prints the new key's Unique Identifier
    python kmip_admin.py revoke UID           (Deactivated: reason Cessation of Operation)
    python kmip_admin.py compromise UID       (Compromised)
    python kmip_admin.py destroy UID          (revokes first when Active)
    python kmip_admin.py state UID            -> prints the State
    python kmip_admin.py decrypt UID WRAP_HEX AAD_HEX     -> plaintext hex
    python kmip_admin.py encrypt UID PLAIN_HEX AAD_HEX    -> a polykms wrap, hex
    python kmip_admin.py ping                 (Discover Versions)

The server and credentials come from POLYKMS_KMIP_ENDPOINT, POLYKMS_KMIP_CA_FILE,
POLYKMS_KMIP_CLIENT_CERT_FILE and POLYKMS_KMIP_CLIENT_KEY_FILE (written by
integration/servers/kmip.sh), or from --endpoint/--ca/--cert/--key.

The wrap layout is polykms' (crates/kmip/src/wrap.rs):
0x01 | iv length | iv | tag length | tag | ciphertext.
"""

import argparse
import os
import sys
import warnings

warnings.filterwarnings("ignore")  # PyKMIP imports ciphers that cryptography deprecates

from kmip import enums  # noqa: E402
from kmip.core import attributes as core_attributes  # noqa: E402
from kmip.core.messages import payloads  # noqa: E402
from kmip.pie import client as pie_client  # noqa: E402

GCM = core_attributes.CryptographicParameters(
    block_cipher_mode=enums.BlockCipherMode.GCM,
    cryptographic_algorithm=enums.CryptographicAlgorithm.AES,
    tag_length=16,
)


def connect(endpoint=None, ca=None, cert=None, key=None):
    endpoint = endpoint or os.environ["POLYKMS_KMIP_ENDPOINT"]
    host, port = endpoint.rsplit(":", 1)
    c = pie_client.ProxyKmipClient(
        hostname=host,
        port=int(port),
        cert=cert or os.environ["POLYKMS_KMIP_CLIENT_CERT_FILE"],
        key=key or os.environ["POLYKMS_KMIP_CLIENT_KEY_FILE"],
        ca=ca or os.environ["POLYKMS_KMIP_CA_FILE"],
        config_file="/dev/null",
        kmip_version=enums.KMIPVersion.KMIP_1_4,
    )
    c.open()
    return c


def create(c, name):
    uid = c.create(
        enums.CryptographicAlgorithm.AES,
        256,
        name=name,
        cryptographic_usage_mask=[enums.CryptographicUsageMask.ENCRYPT, enums.CryptographicUsageMask.DECRYPT],
    )
    c.activate(uid)
    return uid


def state(c, uid):
    _, attrs = c.get_attributes(uid, ["State"])
    return attrs[0].attribute_value.value.name


def revoke(c, uid, code=enums.RevocationReasonCode.CESSATION_OF_OPERATION):
    c.revoke(code, uid)


def destroy(c, uid):
    if state(c, uid) == "ACTIVE":
        revoke(c, uid)
    c.destroy(uid)


def _call(c, operation, payload):
    return c.proxy.send_request_payload(operation, payload)


def decrypt(c, uid, wrap, aad):
    if wrap[0] != 1:
        raise ValueError("not a polykms KMIP wrap")
    iv_len = wrap[1]
    iv = wrap[2:2 + iv_len]
    tag_len = wrap[2 + iv_len]
    tag = wrap[3 + iv_len:3 + iv_len + tag_len]
    ciphertext = wrap[3 + iv_len + tag_len:]
    answer = _call(c, enums.Operation.DECRYPT, payloads.DecryptRequestPayload(
        unique_identifier=uid, cryptographic_parameters=GCM, data=ciphertext,
        iv_counter_nonce=iv, auth_additional_data=aad or None, auth_tag=tag))
    return answer.data


def encrypt(c, uid, plaintext, aad):
    iv = os.urandom(12)
    answer = _call(c, enums.Operation.ENCRYPT, payloads.EncryptRequestPayload(
        unique_identifier=uid, cryptographic_parameters=GCM, data=plaintext,
        iv_counter_nonce=iv, auth_additional_data=aad or None))
    iv = answer.iv_counter_nonce or iv
    tag = answer.auth_tag
    return bytes([1, len(iv)]) + iv + bytes([len(tag)]) + tag + answer.data


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--endpoint")
    p.add_argument("--ca")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("command")
    p.add_argument("args", nargs="*")
    a = p.parse_args(argv)
    c = connect(a.endpoint, a.ca, a.cert, a.key)
    try:
        cmd, args = a.command, a.args
        if cmd == "ping":
            print(" ".join(str(v) for v in c.proxy.discover_versions().protocol_versions))
        elif cmd == "create":
            print(create(c, args[0]))
        elif cmd == "state":
            print(state(c, args[0]))
        elif cmd == "revoke":
            revoke(c, args[0])
        elif cmd == "compromise":
            revoke(c, args[0], enums.RevocationReasonCode.KEY_COMPROMISE)
        elif cmd == "destroy":
            destroy(c, args[0])
        elif cmd == "decrypt":
            print(decrypt(c, args[0], bytes.fromhex(args[1]), bytes.fromhex(args[2])).hex())
        elif cmd == "encrypt":
            print(encrypt(c, args[0], bytes.fromhex(args[1]), bytes.fromhex(args[2])).hex())
        else:
            p.error(f"unknown command {cmd}")
    finally:
        c.close()


if __name__ == "__main__":
    main(sys.argv[1:])
