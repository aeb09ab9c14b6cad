"""Merkle-Patricia roots without a database: the ordered builder and the incremental trie.

Two ways to get the same root `trie.HexaryTrie` would give, at a fraction of its cost
(PERFORMANCE.md point 3):

- `ordered_trie_root(values)` — the root of the trie keyed by ``rlp(index)``: the
  transactions, receipts and withdrawals roots of a block. It sorts the keys once and
  encodes the trie bottom-up in one recursive pass: no node objects, no database.
- `IncrementalTrie` — a trie over raw byte keys that stays in memory between blocks.
  Every node caches its reference (its hash, or its encoding when that is shorter than
  32 bytes and gets inlined into the parent); a change clears the cache on the path
  from the root to the key only, so `root_hash()` after k changes re-encodes
  O(k · depth) nodes, not the whole trie. The state root (accounts keyed by
  keccak(address), storage keyed by keccak(slot32)) is built from these; callers hash
  keys themselves, this trie is not "secure" on its own.

Paths are kept as lowercase hex strings (one character per nibble): slicing,
comparing and hex-prefix encoding them is cheap in CPython. An empty value means
"absent", as in HexaryTrie: setting b"" deletes the key.

Encoding follows the Yellow Paper, appendix D: a leaf is ``[hp(path, leaf), value]``,
an extension ``[hp(path), child]``, a branch 16 children and a value; a child whose
RLP is shorter than 32 bytes is embedded, any other is referenced by its keccak.
"""

from __future__ import annotations

from typing import Iterator, Optional, Sequence, Tuple, Union

from sha3 import keccak_256

BLANK_ROOT = keccak_256(b"\x80").digest()
"""Root of the empty trie: keccak(rlp(b""))."""

_EMPTY_ITEM = b"\x80"  # rlp(b""): an empty branch slot or an absent branch value
_HEX_INDEX = {c: i for i, c in enumerate("0123456789abcdef")}
_HEX_CHAR = "0123456789abcdef"


# --------------------------------------------------------------------------- ordered


def ordered_trie_root(values: Sequence[bytes]) -> bytes:
    """Root of the trie mapping ``rlp(i)`` to ``values[i]``; equals HexaryTrie's root.

    Empty values are absent from the trie (HexaryTrie treats setting b"" as a delete);
    block bodies never contain them.
    """
    items = sorted(
        (_rlp_index_key(i), value) for i, value in enumerate(values) if value
    )
    if not items:
        return BLANK_ROOT
    return keccak_256(_build_node(items, 0, len(items), 0)).digest()


def _rlp_index_key(index: int) -> str:
    """rlp(index) as hex nibbles: 0 is rlp(b"") = 0x80, 1..127 encode as themselves."""
    if index == 0:
        return "80"
    if index < 0x80:
        return f"{index:02x}"
    body = f"{index:x}"
    if len(body) & 1:
        body = "0" + body
    return f"{0x80 + len(body) // 2:02x}{body}"


def _build_node(items: list, lo: int, hi: int, depth: int) -> bytes:
    """RLP of the node holding items[lo:hi], all of which share path[:depth]."""
    first_path = items[lo][0]
    if hi - lo == 1:
        return _leaf_encoding(first_path[depth:], items[lo][1])
    # Items are sorted, so the prefix the first and last share is shared by all.
    last_path = items[hi - 1][0]
    shared = depth
    limit = min(len(first_path), len(last_path))
    while shared < limit and first_path[shared] == last_path[shared]:
        shared += 1
    if shared > depth:
        branch = _build_branch(items, lo, hi, shared)
        return _extension_encoding(first_path[depth:shared], _reference(branch))
    return _build_branch(items, lo, hi, depth)


def _build_branch(items: list, lo: int, hi: int, depth: int) -> bytes:
    value_item = _EMPTY_ITEM
    if len(items[lo][0]) == depth:  # a key ending here sorts first
        value_item = _rlp_bytes(items[lo][1])
        lo += 1
    slots = [_EMPTY_ITEM] * 16
    start = lo
    while start < hi:
        nibble = items[start][0][depth]
        end = start + 1
        while end < hi and items[end][0][depth] == nibble:
            end += 1
        slots[_HEX_INDEX[nibble]] = _reference(_build_node(items, start, end, depth + 1))
        start = end
    slots.append(value_item)
    return _rlp_list(b"".join(slots))


# ----------------------------------------------------------------------- incremental


class _Leaf:
    __slots__ = ("path", "value", "ref")

    def __init__(self, path: str, value: bytes) -> None:
        self.path = path
        self.value = value
        self.ref: Optional[bytes] = None


class _Extension:
    __slots__ = ("path", "child", "ref")

    def __init__(self, path: str, child: "_Branch") -> None:
        self.path = path
        self.child = child
        self.ref: Optional[bytes] = None


class _Branch:
    __slots__ = ("children", "value", "ref")

    def __init__(self) -> None:
        self.children: list = [None] * 16
        self.value: bytes = b""
        self.ref: Optional[bytes] = None


_Node = Union[_Leaf, _Extension, _Branch]


class IncrementalTrie:
    """An in-memory Merkle-Patricia trie over raw byte keys with cached node hashes.

    `set`, `delete` and `get` walk one path; `root_hash` re-encodes only the nodes a
    change touched since the previous call. The root equals `trie.HexaryTrie`'s for
    the same key/value set, whatever the order of the changes that produced it.
    """

    __slots__ = ("_root", "_size")

    def __init__(self) -> None:
        self._root: Optional[_Node] = None
        self._size = 0

    @classmethod
    def from_items(cls, items: Iterator[Tuple[bytes, bytes]]) -> "IncrementalTrie":
        trie = cls()
        for key, value in items:
            trie.set(key, value)
        return trie

    def __len__(self) -> int:
        return self._size

    def get(self, key: bytes) -> bytes:
        """The value at `key`, or b"" when absent (as HexaryTrie answers)."""
        return self.get_path(key.hex())

    def set(self, key: bytes, value: bytes) -> None:
        """Store `value` at `key`; an empty value deletes the key."""
        self.set_path(key.hex(), value)

    def delete(self, key: bytes) -> None:
        """Remove `key`; removing an absent key changes nothing (no hashes dropped)."""
        self.delete_path(key.hex())

    def root_hash(self) -> bytes:
        root = self._root
        if root is None:
            return BLANK_ROOT
        ref = root.ref or _node_reference(root)
        # A root whose encoding is under 32 bytes is inlined as its ref; the root
        # hash is always the keccak of the encoding.
        return ref[1:] if len(ref) == 33 else keccak_256(ref).digest()

    # The *_path variants take the key as lowercase hex: callers that hash keys
    # (the state) save a bytes->hex conversion per key.

    def get_path(self, path: str) -> bytes:
        node = self._root
        while node is not None:
            kind = type(node)
            if kind is _Branch:
                if not path:
                    return node.value
                node = node.children[_HEX_INDEX[path[0]]]
                path = path[1:]
            elif kind is _Leaf:
                return node.value if node.path == path else b""
            else:
                prefix = node.path
                if not path.startswith(prefix):
                    return b""
                path = path[len(prefix):]
                node = node.child
        return b""

    def set_path(self, path: str, value: bytes) -> None:
        if not value:
            self.delete_path(path)
            return
        self._root = self._set(self._root, path, value)

    def delete_path(self, path: str) -> None:
        if self._root is None or not self.get_path(path):
            return
        self._size -= 1
        self._root = _delete(self._root, path)

    def _set(self, node: Optional[_Node], path: str, value: bytes) -> _Node:
        if node is None:
            self._size += 1
            return _Leaf(path, value)
        kind = type(node)
        if kind is _Branch:
            node.ref = None
            if not path:
                if not node.value:
                    self._size += 1
                node.value = value
            else:
                index = _HEX_INDEX[path[0]]
                node.children[index] = self._set(node.children[index], path[1:], value)
            return node
        if kind is _Leaf:
            leaf_path = node.path
            if leaf_path == path:
                node.value = value
                node.ref = None
                return node
            shared = _shared_prefix_length(leaf_path, path)
            branch = _Branch()
            _attach(branch, leaf_path[shared:], node)
            self._size += 1
            _attach(branch, path[shared:], _Leaf("", value))
            return _Extension(path[:shared], branch) if shared else branch
        # Extension
        ext_path = node.path
        shared = _shared_prefix_length(ext_path, path)
        if shared == len(ext_path):
            node.child = self._set(node.child, path[shared:], value)
            node.ref = None
            return node
        branch = _Branch()
        rest = ext_path[shared + 1:]
        branch.children[_HEX_INDEX[ext_path[shared]]] = (
            _Extension(rest, node.child) if rest else node.child
        )
        self._size += 1
        _attach(branch, path[shared:], _Leaf("", value))
        return _Extension(path[:shared], branch) if shared else branch


def _attach(branch: _Branch, rest: str, leaf: _Leaf) -> None:
    """Hang `leaf` (re-pathed to what remains after the branch) under `branch`."""
    if not rest:
        branch.value = leaf.value
        return
    leaf.path = rest[1:]
    leaf.ref = None
    branch.children[_HEX_INDEX[rest[0]]] = leaf


def _delete(node: _Node, path: str) -> Optional[_Node]:
    """Remove `path`, known to be present, below `node`; return the node replacing it."""
    kind = type(node)
    if kind is _Leaf:
        return None
    if kind is _Extension:
        prefix_length = len(node.path)
        child = _delete(node.child, path[prefix_length:])
        # A branch with one entry left collapses: fold it into this extension.
        child_kind = type(child)
        if child_kind is _Leaf:
            return _Leaf(node.path + child.path, child.value)
        if child_kind is _Extension:
            return _Extension(node.path + child.path, child.child)
        node.child = child
        node.ref = None
        return node
    # Branch
    node.ref = None
    children = node.children
    if not path:
        node.value = b""
    else:
        index = _HEX_INDEX[path[0]]
        children[index] = _delete(children[index], path[1:])
    remaining = 16 - children.count(None)
    if remaining > 1 or (remaining == 1 and node.value):
        return node
    if remaining == 0:
        return _Leaf("", node.value)
    # Exactly one child and no value: the branch folds into its child.
    index = next(i for i, child in enumerate(children) if child is not None)
    child = children[index]
    nibble = _HEX_CHAR[index]
    child_kind = type(child)
    if child_kind is _Leaf:
        return _Leaf(nibble + child.path, child.value)
    if child_kind is _Extension:
        return _Extension(nibble + child.path, child.child)
    return _Extension(nibble, child)


def _shared_prefix_length(a: str, b: str) -> int:
    limit = min(len(a), len(b))
    i = 0
    while i < limit and a[i] == b[i]:
        i += 1
    return i


def _node_reference(node: _Node) -> bytes:
    """Encode `node` (children first) and cache its reference in the parent's form."""
    kind = type(node)
    if kind is _Branch:
        parts = [
            _EMPTY_ITEM if child is None else (child.ref or _node_reference(child))
            for child in node.children
        ]
        parts.append(_rlp_bytes(node.value) if node.value else _EMPTY_ITEM)
        encoding = _rlp_list(b"".join(parts))
    elif kind is _Leaf:
        encoding = _leaf_encoding(node.path, node.value)
    else:
        child = node.child
        encoding = _extension_encoding(node.path, child.ref or _node_reference(child))
    ref = encoding if len(encoding) < 32 else b"\xa0" + keccak_256(encoding).digest()
    node.ref = ref
    return ref


# --------------------------------------------------------------------------- encoding


def _reference(encoding: bytes) -> bytes:
    """A child as its parent lists it: inlined when short, else rlp(keccak(node))."""
    return encoding if len(encoding) < 32 else b"\xa0" + keccak_256(encoding).digest()


def _leaf_encoding(path: str, value: bytes) -> bytes:
    if len(path) & 1:
        key = bytes.fromhex("3" + path)
    else:
        key = bytes.fromhex("20" + path)
    return _rlp_list(_rlp_bytes(key) + _rlp_bytes(value))


def _extension_encoding(path: str, child_reference: bytes) -> bytes:
    if len(path) & 1:
        key = bytes.fromhex("1" + path)
    else:
        key = bytes.fromhex("00" + path)
    return _rlp_list(_rlp_bytes(key) + child_reference)


def _rlp_bytes(data: bytes) -> bytes:
    length = len(data)
    if length == 1 and data[0] < 0x80:
        return data
    if length < 56:
        return bytes((0x80 + length,)) + data
    length_bytes = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes((0xB7 + len(length_bytes),)) + length_bytes + data


def _rlp_list(payload: bytes) -> bytes:
    length = len(payload)
    if length < 56:
        return bytes((0xC0 + length,)) + payload
    length_bytes = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes((0xF7 + len(length_bytes),)) + length_bytes + payload
