"""The checkpoint's Merkle tree is RFC 9162's, and every audit path leads to its root."""

from __future__ import annotations

import hashlib

import pytest

from optin.consent import merkle


def rfc9162_root(leaves: list[bytes]) -> bytes:
    """MTH as RFC 9162 §2.1.1 defines it, recursively (the reference for the level-wise one)."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + rfc9162_root(leaves[:k]) + rfc9162_root(leaves[k:])).digest()


def data(n: int) -> list[bytes]:
    return [merkle.leaf_data(i + 1, i % 7 + 1, hashlib.sha256(str(i).encode()).hexdigest())
            for i in range(n)]


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 33])
def test_root_is_rfc9162_and_every_path_verifies(size):
    leaves = data(size)
    tree = merkle.levels([merkle.leaf_hash(d) for d in leaves])
    assert merkle.root(tree) == rfc9162_root(leaves).hex()
    for index, leaf in enumerate(leaves):
        path = merkle.audit_path(tree, index)
        assert merkle.packed_audit_path(merkle.packed(tree), index) == path
        assert len(path) <= max(1, size - 1).bit_length()
        assert merkle.root_from_path(leaf, path) == merkle.root(tree)


def test_a_path_proves_only_its_own_leaf():
    leaves = data(9)
    tree = merkle.levels([merkle.leaf_hash(d) for d in leaves])
    path = merkle.audit_path(tree, 4)
    assert merkle.root_from_path(leaves[5], path) != merkle.root(tree)
    assert merkle.root_from_path(merkle.leaf_data(5, 5, "0" * 64), path) != merkle.root(tree)
    flipped = [("R" if side == "L" else "L", sibling) for side, sibling in path]
    assert merkle.root_from_path(leaves[4], flipped) != merkle.root(tree)


def test_an_inner_node_is_no_leaf():
    """Leaves and nodes are hashed with different prefixes (no second-preimage by a node)."""
    leaves = data(4)
    tree = merkle.levels([merkle.leaf_hash(d) for d in leaves])
    node = tree[1][0]
    assert merkle.root_from_path(node, [("R", tree[1][1].hex())]) != merkle.root(tree)
