"""Value types of the exchange domain: sides, time in force, self-trade modes,
market kinds and states, the block context, and the fixed-point scales.

Every enum is an ``IntEnum`` with explicit values: the values are part of the
wire format (the precompile ABI-encodes them, ``to_bytes`` persists them), so
they are never renumbered; new members take new numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

# Fees are fractions in parts per million: 1 = 0.0001 % (a hundredth of a basis
# point). A fee is ``ceil(notional * rate / FEE_SCALE)`` so the exchange never
# under-charges by rounding.
FEE_SCALE = 1_000_000

# The fixed-point scale of interest rates and risk factors (part 2: lending
# prices, shocks, credit factors). Declared here so both parts share one name.
RATE_SCALE = 1_000_000_000


class Side(IntEnum):
    BUY = 0  # a bid: pays quote, receives base (lending part 2: the borrower)
    SELL = 1  # an ask: pays base, receives quote (lending part 2: the lender)


class TimeInForce(IntEnum):
    GTC = 0  # good till cancelled (or till ``expires_at`` when set: GTT)
    IOC = 1  # immediate or cancel: the unfilled remainder is cancelled
    FOK = 2  # fill or kill: rejected unless it can fill completely at once
    POST_ONLY = 3  # rests only; rejected if it would take liquidity


class OrderType(IntEnum):
    LIMIT = 0
    MARKET = 1  # an IOC whose ``price`` is the worst price the trader accepts


class SelfTradePrevention(IntEnum):
    """What happens when an incoming order meets a resting order of its own
    account. The incoming order's mode decides."""

    CANCEL_RESTING = 0  # cancel the resting order, keep matching
    CANCEL_INCOMING = 1  # stop matching, cancel the incoming remainder
    CANCEL_BOTH = 2  # cancel the resting order and the incoming remainder


class MarketKind(IntEnum):
    SPOT = 0
    PERP = 1  # part 2: perpetual futures, settled into positions
    LENDING = 2  # part 2: a lending book whose price is an interest rate


class MarkMethod(IntEnum):
    """How a perp market's mark price (margin, liquidation) is made."""

    ORACLE = 0  # the oracle (index) price
    MEDIAN = 1  # the median of oracle, book mid and last trade price


class MarketStatus(IntEnum):
    ACTIVE = 0
    CANCEL_ONLY = 1  # cancels and expiry only; no new orders, no modifies
    HALTED = 2  # nothing but expiry


class OrderStatus(IntEnum):
    """Where a placed order ended up when the command returned."""

    RESTING = 0  # on the book (possibly after partial fills)
    FILLED = 1
    CANCELLED = 2  # the remainder did not rest (IOC, market, self-trade)


class CancelReason(IntEnum):
    USER = 0  # cancel, cancel-by-client-id, cancel-all
    IOC_REMAINDER = 1  # IOC / market order remainder after matching
    SELF_TRADE = 2  # self-trade prevention
    EXPIRED = 3  # good-till-time reached by block timestamp
    ADMIN = 4  # market closed by the operator (reserved for part 2)
    LIQUIDATION = 5  # reserved for part 2


@dataclass(slots=True, frozen=True)
class Context:
    """What the chain tells the engine about the moment a command runs.

    The engine never reads a clock: expiry, funding and interest (part 2) all
    use ``timestamp`` (seconds, the block's) and ``block_number`` from here.
    """

    block_number: int
    timestamp: int
