"""Events: what happened, in order, with everything a client needs.

``Engine.apply`` returns them beside the result; the precompile turns them into
EVM logs and the node streams them as book deltas. Quantities are base units,
prices quote units per lot, fees quote units. Part 2 adds event classes
(funding, interest, liquidation, default); existing ones keep their fields.
"""

from __future__ import annotations

from dataclasses import dataclass

from .types import CancelReason, MarketStatus, OrderType, Side, TimeInForce


@dataclass(slots=True)
class Deposited:
    account: bytes
    asset: int
    amount: int
    available: int


@dataclass(slots=True)
class Withdrawn:
    account: bytes
    asset: int
    amount: int
    available: int


@dataclass(slots=True)
class OrderAccepted:
    """An order passed every check; fills and a cancel of its remainder may follow.
    If neither removes it, it rests with ``quantity`` minus what the fills took."""

    order_id: int
    account: bytes
    market: int
    side: Side
    price: int
    quantity: int
    time_in_force: TimeInForce
    order_type: OrderType
    client_order_id: int
    expires_at: int


@dataclass(slots=True)
class Fill:
    trade_id: int
    market: int
    price: int  # the maker's price
    quantity: int
    taker_side: Side
    maker_order_id: int
    maker_account: bytes
    maker_remaining: int  # after this fill
    maker_fee: int
    taker_order_id: int
    taker_account: bytes
    taker_remaining: int  # after this fill
    taker_fee: int


@dataclass(slots=True)
class OrderCancelled:
    order_id: int
    account: bytes
    market: int
    side: Side
    price: int
    remaining: int  # base units that were open and are now released
    reason: CancelReason


@dataclass(slots=True)
class OrderModified:
    order_id: int
    account: bytes
    market: int
    side: Side
    price: int
    remaining: int
    requeued: bool  # lost time priority


@dataclass(slots=True)
class MarketStatusChanged:
    market: int
    status: MarketStatus
