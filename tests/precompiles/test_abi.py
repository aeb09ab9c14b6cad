"""The ABI derived from dataclasses: static and dynamic fields both ways, checked
against eth-abi (what clients use)."""
from __future__ import annotations

from dataclasses import dataclass

from eth_abi import decode, encode

from exchange import Side
from precompiles import abi


@dataclass(slots=True)
class SetRules:  # a command with a flat tuple of ints (e.g. de-risk rules)
    account: bytes
    market: int
    rules: tuple


@dataclass(slots=True)
class RulesSet:  # an event with a dynamic field and a signed one
    account: bytes
    market: int
    side: Side
    size: int
    rules: tuple


def test_a_tuple_field_is_a_uint256_array_and_the_actor_is_msg_sender():
    f = abi.Function(SetRules, None)
    assert f.signature == "setRules(uint256,uint256[])"
    sender = b"\x11" * 20
    data = encode(["uint256", "uint256[]"], [7, [1, 2, 3, 2**200]])
    assert f.decode(data, sender) == {"market": 7, "rules": (1, 2, 3, 2**200), "account": sender}


def test_malformed_dynamic_calldata_is_a_value_error():
    f = abi.Function(SetRules, None)
    try:
        f.decode(b"\x00" * 40, b"\x11" * 20)
    except ValueError:
        return
    raise AssertionError("malformed calldata accepted")


def test_events_with_dynamic_and_signed_fields_decode_with_eth_abi():
    e = abi.Event(RulesSet)
    assert e.signature == "RulesSet(address,uint256,uint8,int256,uint256[])"
    topics, data = e.encode(RulesSet(b"\x22" * 20, 3, Side.SELL, -5, (9, 8)))
    assert topics[1] == (b"\x22" * 20).rjust(32, b"\x00") and int.from_bytes(topics[2], "big") == 3
    assert decode(["uint8", "int256", "uint256[]"], data) == (1, -5, (9, 8))


def test_static_events_encode_signed_values_in_twos_complement():
    @dataclass(slots=True)
    class Moved:
        account: bytes
        size: int
        price: int

    topics, data = abi.Event(Moved).encode(Moved(b"\x01" * 20, -3, 10))
    assert decode(["int256", "uint256"], data) == (-3, 10)
