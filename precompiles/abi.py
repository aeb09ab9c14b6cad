"""The exchange's Solidity ABI, derived from the engine's own value types.

Every command class of `exchange` becomes one function (`PlaceOrder` ->
`placeOrder(...)`): its fields in declaration order are the inputs, except the
acting account (`account`, `admin`, `oracle`), which is always `msg.sender`.
Every result class is the function's outputs, every event class an EVM event.
Deriving the ABI from the dataclasses keeps the precompile, `IExchange.sol`
(written by `python -m precompiles.abi`; a test demands the committed file equal
its output) and the engine from drifting apart as the engine grows.

Types: a `bytes` field is `address`, `bool` is `bool`, an `IntEnum` is `uint8`,
an `int` is `uint256` (`int256` for the signed quantities in SIGNED_FIELDS),
`int | None` is `uint256` with `type(uint256).max` meaning None, a `tuple`
of actions (Batch) is `bytes[]`, each element the calldata of one function, and
any other `tuple` field is a flat `uint256[]`.

The hot functions take static words only, so decoding is slicing 32-byte words
and `int.from_bytes` (≈1 µs for placeOrder) instead of eth-abi's generic decoder
(≈25 µs); eth-abi handles the rare dynamic values (batches, depth views).
"""
from __future__ import annotations

import dataclasses
import enum
import types
import typing

import sha3
from eth_abi import encode as abi_encode

# Fields that name the acting account: filled from msg.sender, never from calldata.
ACTOR_FIELDS = ("account", "admin", "oracle", "liquidator")
# Integer fields that may be negative (positions, PnL, funding): int256 on the wire.
SIGNED_FIELDS = frozenset({
    "size", "new_size", "old_size", "position", "entry_value", "realized_pnl", "pnl",
    "funding", "funding_paid", "payment", "amount_signed", "premium", "rate_signed",
    "equity", "available_open", "available_liq", "delta", "index", "funding_index",
    "balance", "cumulative_funding", "shortfall_signed", "rate", "unrealized_pnl", "pending_funding",
})
# Event fields worth filtering on, in priority order (at most three become topics).
INDEXED_FIELDS = ("account", "market", "maker_account", "taker_account", "order_id", "loan_id",
                  "lender", "borrower", "asset")
NONE_SENTINEL = 2**256 - 1
UINT256_LIMIT = 2**256
INT256_LIMIT = 2**255


def keccak(data: bytes) -> bytes:
    return sha3.keccak_256(data).digest()


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def lower_camel(class_name: str) -> str:
    return class_name[:1].lower() + class_name[1:]


class Field(typing.NamedTuple):
    name: str  # the dataclass field name
    abi_type: str  # Solidity type
    kind: str  # "address" | "bool" | "enum" | "uint" | "int" | "optional" | "actions"
    enum_class: type | None


def field_of(name: str, hint) -> Field:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if args == [int]:
            return Field(name, "uint256", "optional", None)
        raise TypeError(f"field {name}: unsupported union {hint}")
    if hint is bytes:
        return Field(name, "address", "address", None)
    if hint is bool:
        return Field(name, "bool", "bool", None)
    if isinstance(hint, type) and issubclass(hint, enum.IntEnum):
        return Field(name, "uint8", "enum", hint)
    if hint is int:
        if name in SIGNED_FIELDS:
            return Field(name, "int256", "int", None)
        return Field(name, "uint256", "uint", None)
    if hint is tuple or origin is tuple:
        if name == "actions":  # a batch: each element the calldata of one function
            return Field(name, "bytes[]", "actions", None)
        return Field(name, "uint256[]", "uint_array", None)  # a flat tuple of ints
    raise TypeError(f"field {name}: unsupported type {hint!r}")


def fields_of(cls) -> list[Field]:
    hints = typing.get_type_hints(cls)
    return [field_of(f.name, hints[f.name]) for f in dataclasses.fields(cls)]


class Function:
    """One command class as a Solidity function."""

    def __init__(self, command_class, result_class) -> None:
        self.command_class = command_class
        self.name = lower_camel(command_class.__name__)
        all_fields = fields_of(command_class)
        self.actor = None
        self.inputs: list[Field] = []
        for f in all_fields:
            if f.name in ACTOR_FIELDS and f.kind == "address" and self.actor is None:
                self.actor = f.name
            else:
                self.inputs.append(f)
        self.result_class = result_class
        self.outputs = fields_of(result_class) if result_class is not None else []
        self.signature = f"{self.name}({','.join(f.abi_type for f in self.inputs)})"
        self.selector = keccak(self.signature.encode())[:4]
        self.static_inputs = all(f.kind not in ("actions", "uint_array") for f in self.inputs)
        self.names = [f.name for f in all_fields]

    def decode(self, data: bytes, actor: bytes) -> dict:
        """Keyword arguments of the command from calldata (selector stripped).
        Raises ValueError on malformed calldata."""
        inputs = self.inputs
        if self.static_inputs:
            if len(data) < 32 * len(inputs):
                raise ValueError(f"{self.name}: calldata too short")
            values = {}
            offset = 0
            for f in inputs:
                word = int.from_bytes(data[offset:offset + 32], "big")
                offset += 32
                values[f.name] = _from_word(f, word)
        else:
            from eth_abi import decode as abi_decode

            try:
                raw = abi_decode([f.abi_type for f in inputs], data)
            except Exception as exc:  # eth-abi raises several types for bad input
                raise ValueError(f"{self.name}: malformed calldata ({exc})") from None
            values = {}
            for f, v in zip(inputs, raw):
                if f.kind == "actions":
                    values[f.name] = tuple(bytes(x) for x in v)
                elif f.kind == "uint_array":
                    values[f.name] = tuple(int(x) for x in v)
                elif f.kind == "address":
                    values[f.name] = bytes.fromhex(v[2:])
                else:
                    values[f.name] = _from_word(f, v if not isinstance(v, bool) else int(v))
        if self.actor is not None:
            values[self.actor] = actor
        return values

    def encode_result(self, result) -> bytes:
        return encode_static(self.outputs, result)

    def solidity(self, result_text: str) -> str:
        params = ", ".join(f"{f.abi_type}{' calldata' if f.abi_type.endswith('[]') else ''} "
                           f"{camel(f.name)}" for f in self.inputs)
        line = f"    function {self.name}({params}) external"
        if self.name in PAYABLE:
            line += " payable"
        if result_text:
            line += f" returns ({result_text})"
        return line + ";"


PAYABLE = frozenset({"deposit"})


def _from_word(f: Field, word: int):
    kind = f.kind
    if kind == "uint":
        return word
    if kind == "int":
        return word - UINT256_LIMIT if word >= INT256_LIMIT else word
    if kind == "enum":
        try:
            return f.enum_class(word)
        except ValueError:
            raise ValueError(f"{f.name}: {word} is not a valid {f.enum_class.__name__}") from None
    if kind == "bool":
        if word > 1:
            raise ValueError(f"{f.name}: not a bool")
        return bool(word)
    if kind == "address":
        if word >> 160:
            raise ValueError(f"{f.name}: not an address")
        return word.to_bytes(20, "big")
    if kind == "optional":
        return None if word == NONE_SENTINEL else word
    raise ValueError(f"{f.name}: cannot decode a {kind} word")


def encode_static(fields: list[Field], obj) -> bytes:
    """ABI words of `obj`'s fields (all static types)."""
    out = bytearray()
    for f in fields:
        out += word(getattr(obj, f.name), f)
    return bytes(out)


def word(value, f: Field | None = None) -> bytes:
    if value is None:
        return NONE_SENTINEL.to_bytes(32, "big")
    if isinstance(value, bytes):
        return value.rjust(32, b"\x00")
    value = int(value)
    if value < 0:
        value += UINT256_LIMIT
    return value.to_bytes(32, "big")


class Event:
    """One event class as an EVM event: topic0, indexed fields, data fields."""

    def __init__(self, event_class) -> None:
        self.event_class = event_class
        self.name = event_class.__name__
        self.fields = fields_of(event_class)
        indexed = []
        for name in INDEXED_FIELDS:
            for f in self.fields:
                if f.name == name and len(indexed) < 3:
                    indexed.append(f)
        self.indexed = [f for f in self.fields if f in indexed]
        self.data = [f for f in self.fields if f not in indexed]
        self.signature = f"{self.name}({','.join(f.abi_type for f in self.fields)})"
        self.topic0 = keccak(self.signature.encode())
        self._indexed_names = [f.name for f in self.indexed]
        self._data_names = [f.name for f in self.data]
        self._dynamic = any(f.abi_type.endswith("[]") for f in self.data)
        if not self._dynamic:
            # Static events are on the hot path (every order's logs): one generated
            # function of straight-line word encodings, ~5x cheaper than a loop.
            self.encode = _static_encoder(self.topic0, self.indexed, self.data)

    def encode(self, event) -> tuple[tuple[bytes, ...], bytes]:
        topics = (self.topic0,) + tuple(word(getattr(event, n)) for n in self._indexed_names)
        if self._dynamic:
            values = [getattr(event, n) for n in self._data_names]
            values = [tuple(int(x) for x in v) if f.kind == "uint_array" else
                      (None if v is None else v) for f, v in zip(self.data, values)]
            data = abi_encode([f.abi_type for f in self.data],
                              [NONE_SENTINEL if v is None else (int(v) if f.kind in ("uint", "enum", "optional") else v)
                               for f, v in zip(self.data, values)])
        else:
            data = b"".join(word(getattr(event, n)) for n in self._data_names)
        return topics, data

    def solidity(self) -> str:
        params = ", ".join(f"{f.abi_type}{' indexed' if f in self.indexed else ''} {camel(f.name)}"
                           for f in self.fields)
        return f"    event {self.name}({params});"


def _word_expression(f: Field) -> str:
    """Python source of the 32-byte word of field `f` of `e` (two's complement via
    the mask, so signed and unsigned ints and IntEnums share one form)."""
    value = f"e.{f.name}"
    if f.kind == "address":
        return f"{value}.rjust(32, Z)"
    if f.kind == "optional":
        return f"(N if {value} is None else {value} & M).to_bytes(32, 'big')"
    return f"({value} & M).to_bytes(32, 'big')"


def _static_encoder(topic0: bytes, indexed: list[Field], data: list[Field]):
    topics = ", ".join(["T"] + [_word_expression(f) for f in indexed])
    body = " + ".join(_word_expression(f) for f in data) or "b''"
    source = f"def encode(e):\n    return ({topics},), {body}\n"
    namespace = {"T": topic0, "Z": b"\x00", "M": UINT256_LIMIT - 1, "N": NONE_SENTINEL}
    exec(source, namespace)  # noqa: S102 - source built from field names of our own dataclasses
    return namespace["encode"]


def encode_error(code: int, reason: str) -> bytes:
    """`ExchangeError(uint32 code, string reason)` revert data."""
    return ERROR_SELECTOR + abi_encode(["uint32", "string"], [code, reason])


ERROR_SIGNATURE = "ExchangeError(uint32,string)"
ERROR_SELECTOR = keccak(ERROR_SIGNATURE.encode())[:4]
