"""CRC32C (Castagnoli), as Cloud KMS uses for its *_crc32c integrity fields.

Pure Python, table driven: the payloads here are at most 64 KiB, so speed is not an issue and
no extra package is needed. Check value: crc32c(b"123456789") == 0xE3069283.
"""

_POLY = 0x82F63B78  # reversed Castagnoli polynomial


def _table():
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ _POLY if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283
