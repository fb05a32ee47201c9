"""The Merkle tree of a ledger checkpoint: RFC 9162 (Certificate Transparency 2.0) hashing.

A checkpoint's root commits to every chain head at once, and a short audit
path proves one head is in it without the others. The hashes are RFC 9162's
(§2.1.1): ``leaf = SHA-256(0x00 || data)``, ``node = SHA-256(0x01 || left || right)``,
the tree split at the largest power of two below its size, which is the same as
pairing each level left to right and carrying an odd last node up unchanged.
Written here (some forty lines) rather than taken from a library: the Python
Merkle packages keep their own storage or hash differently, and an outsider
checks a path with the four lines of :func:`root_from_path`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

#: Root of a tree without leaves (RFC 9162: the hash of the empty string).
EMPTY_ROOT = hashlib.sha256(b"").hexdigest()


def leaf_data(subscription_id: int, seq: int, chain_hash: str) -> bytes:
    """What a leaf hashes: one subscription's chain head, ``id:seq:chain_hash``."""
    return f"{subscription_id}:{seq}:{chain_hash}".encode()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def levels(leaves: Sequence[bytes]) -> list[list[bytes]]:
    """Every level of the tree over these leaf hashes, leaves first, root last."""
    tree = [list(leaves)]
    while len(tree[-1]) > 1:
        below = tree[-1]
        above = [node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)]
        if len(below) % 2:
            above.append(below[-1])
        tree.append(above)
    return tree


def root(tree: list[list[bytes]]) -> str:
    """The root of :func:`levels`' tree, hex."""
    return tree[-1][0].hex() if tree[0] else EMPTY_ROOT


def audit_path(tree: list[list[bytes]], index: int) -> list[tuple[str, str]]:
    """The siblings from leaf ``index`` up to the root: ``("L"|"R", hex)`` each, saying
    on which side the sibling goes when the two are hashed together."""
    path: list[tuple[str, str]] = []
    for level in tree[:-1]:
        if index % 2:
            path.append(("L", level[index - 1].hex()))
        elif index + 1 < len(level):
            path.append(("R", level[index + 1].hex()))
        index //= 2
    return path


def packed(tree: list[list[bytes]]) -> list[bytes]:
    """The tree with each level as one bytes string (32 bytes a node): a quarter of the
    memory of the lists, for trees kept between proofs."""
    return [b"".join(level) for level in tree]


def packed_audit_path(tree: list[bytes], index: int) -> list[tuple[str, str]]:
    """:func:`audit_path` over a :func:`packed` tree."""
    path: list[tuple[str, str]] = []
    for level in tree[:-1]:
        size = len(level) // 32
        if index % 2:
            path.append(("L", level[(index - 1) * 32:index * 32].hex()))
        elif index + 1 < size:
            path.append(("R", level[(index + 1) * 32:(index + 2) * 32].hex()))
        index //= 2
    return path


def root_from_path(data: bytes, path: Sequence[Sequence[str]]) -> str:
    """The root a leaf and its audit path lead to (compare it with the signed root)."""
    digest = leaf_hash(data)
    for side, sibling in path:
        other = bytes.fromhex(sibling)
        digest = node_hash(other, digest) if side == "L" else node_hash(digest, other)
    return digest.hex()
