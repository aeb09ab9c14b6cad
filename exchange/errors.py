"""Typed rejections with stable reason codes.

Every rejected command raises :class:`ExchangeError` before it changes any
state. ``error.reason`` is a :class:`Reason`; ``error.code`` is its small
integer, which the precompile ABI-encodes into a custom Solidity error. Codes
are stable: never renumber, never reuse; add new reasons at the end.
"""

from __future__ import annotations

from enum import IntEnum


class Reason(IntEnum):
    UNKNOWN_ASSET = 1
    UNKNOWN_MARKET = 2
    MARKET_HALTED = 3  # market not ACTIVE (or not accepting cancels when HALTED)
    INVALID_AMOUNT = 4  # deposit / withdrawal amount not positive
    INSUFFICIENT_BALANCE = 5  # free balance does not cover the hold or withdrawal
    OFF_TICK = 6  # price is not a multiple of the market's tick size
    BELOW_LOT = 7  # quantity smaller than one lot
    OFF_LOT = 8  # quantity not a multiple of the lot size
    BELOW_MIN_NOTIONAL = 9
    WOULD_CROSS_POST_ONLY = 10  # post-only (or a modify) would take liquidity
    FOK_NOT_FILLABLE = 11
    UNKNOWN_ORDER = 12  # no open order with that id / client id for this account
    TOO_MANY_OPEN_ORDERS = 13
    DUPLICATE_CLIENT_ORDER_ID = 14  # client order id already used by an open order
    INVALID_PRICE = 15  # price not positive
    INVALID_QUANTITY = 16  # quantity not positive
    INVALID_ORDER = 17  # inconsistent fields (e.g. a market order that is post-only)
    ALREADY_EXPIRED = 18  # expires_at at or before the block timestamp
    BATCH_TOO_LARGE = 19
    NESTED_BATCH = 20
    NOT_AUTHORIZED = 21  # admin command from an account that is not the admin
    MARKET_KIND_UNSUPPORTED = 22  # perp / lending markets: part 2
    NO_CHANGE = 23  # a modify that changes neither price nor quantity
    UNKNOWN_COMMAND = 24
    WRONG_ACCOUNT = 25  # a batch action for another account than the batch's
    # 26-39: perpetuals (exchange/perps.py)
    REDUCE_ONLY_REJECTED = 26  # reduce-only order without an opposite position, or resting
    NO_ORACLE_PRICE = 27  # the perp market's underlying has no oracle price yet
    # 40-49: lending; 50-59: risk and liquidation
    UNKNOWN_LOAN = 40  # no open loan with that id borrowed by this account (exchange/lending.py)
    INSUFFICIENT_MARGIN = 50  # opening-level available margin would fall below zero
    # 51-54: automatic borrowing (exchange/margin.py)
    BORROW_UNAVAILABLE = 51  # the asset's lending book has offers, but too few for the shortfall
    # 55-59: liquidation and de-risk policies (exchange/liquidation.py)
    NOT_LIQUIDATABLE = 55  # Liquidate: liquidation-level available margin is above zero
    NOTHING_TO_LIQUIDATE = 56  # Liquidate: unknown account, or no position, borrowing or negative balance
    TOO_MANY_DERISK_RULES = 57  # SetDeriskPolicy: more than liquidation.MAX_DERISK_RULES rules
    INVALID_DERISK_RULE = 58  # SetDeriskPolicy: a rule's kind or fields are not valid
    LIQUIDATION_BLOCKED = 59  # the books cannot absorb the unwind within the price bound (or a market is closed)


class ExchangeError(Exception):
    """A rejected command. State is unchanged when this is raised."""

    __slots__ = ("reason", "detail")

    def __init__(self, reason: Reason, detail: str = "") -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail

    @property
    def code(self) -> int:
        return int(self.reason)

    def __str__(self) -> str:
        if self.detail:
            return f"{self.reason.name}: {self.detail}"
        return self.reason.name

    def __eq__(self, other: object) -> bool:
        # Batch results hold errors as values; two equal rejections compare equal
        # so results of identical streams can be compared.
        if not isinstance(other, ExchangeError):
            return NotImplemented
        return self.reason == other.reason and self.detail == other.detail

    def __hash__(self) -> int:
        return hash((self.reason, self.detail))
