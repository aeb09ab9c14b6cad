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
class OracleUpdated:
    asset: int  # asset id
    price: int  # quote units per whole token


@dataclass(slots=True)
class PositionChanged:
    """A perp position after one fill (one per side of each perp Fill)."""

    account: bytes
    market: int
    size: int  # base units, + long / - short
    entry_value: int  # quote units, + paid for a long / - received for a short
    realized_pnl: int  # quote units paid (+) to / taken (-) from the account by this fill


@dataclass(slots=True)
class FundingPaid:
    """A perp market's funding payment: longs pay ``rate`` (RATE_SCALE parts
    of size x oracle price; negative: shorts pay). Positions settle lazily,
    against ``funding_index``."""

    market: int
    rate: int
    oracle_price: int
    funding_index: int
    timestamp: int


# ---- lending (exchange/lending.py); amounts in the lent asset's units, rates
# in RATE_SCALE parts a year, times in block seconds.


@dataclass(slots=True)
class LoanOpened:
    """A loan made by a fill on a lending book (or by a roll-over: ``rolled_from``
    is then the maturing loan's id, else 0)."""

    loan_id: int
    market: int
    lender: bytes
    borrower: bytes
    asset: int  # asset id
    principal: int
    rate: int
    start: int
    maturity: int
    rolled_from: int


@dataclass(slots=True)
class InterestPaid:
    """Interest moved from the borrower's free balance to the lender's."""

    loan_id: int
    lender: bytes
    borrower: bytes
    asset: int
    amount: int


@dataclass(slots=True)
class LoanRepaid:
    """Principal paid back (early by RepayLoan, or at maturity by the Tick)."""

    loan_id: int
    lender: bytes
    borrower: bytes
    asset: int
    principal_paid: int
    principal_left: int  # 0: the loan is closed
    at_maturity: bool


@dataclass(slots=True)
class LoanRolled:
    """At maturity the borrower's free balance was short: ``amount`` (whole lots)
    was borrowed against the best offers, one new loan per offer taken."""

    loan_id: int  # the maturing loan
    borrower: bytes
    asset: int
    amount: int
    new_loans: tuple


@dataclass(slots=True)
class LoanOverdue:
    """A loan matured and could not be fully repaid or rolled; it stays open and
    keeps accruing (phase 2's default handling takes it from there)."""

    loan_id: int
    lender: bytes
    borrower: bytes
    asset: int
    principal: int
    interest_due: int


@dataclass(slots=True)
class ClaimTakenOver:
    """A liquidated account's lent claim passed to the insurance fund, which
    paid ``claim`` (principal + interest due, in the loan's asset) for it."""

    loan_id: int
    lender: bytes  # the liquidated account, the claim's lender until now
    borrower: bytes
    asset: int
    new_lender: bytes  # the insurance fund
    claim: int


@dataclass(slots=True)
class DefaultShared:
    """A defaulting borrower's shortfall cut this lender's claim (pro rata)."""

    loan_id: int
    lender: bytes
    borrower: bytes
    asset: int
    loss: int  # claim written off, interest first
    claim_left: int  # principal + interest due after the cut


@dataclass(slots=True)
class AutoBorrowed:
    """The account spent (or lost) more of an asset than its free balance:
    ``amount`` (whole lots) was borrowed from the asset's lending book at the
    best offers, one loan per offer (exchange/margin.py)."""

    account: bytes
    asset: int
    amount: int
    new_loans: tuple


@dataclass(slots=True)
class AccountLiquidatable:
    """The account's liquidation-level available margin reached zero (exchange/liquidation.py)."""

    account: bytes
    available_liq: int  # signed, quote units


@dataclass(slots=True)
class AccountLiquidated:
    liquidator: bytes
    account: bytes
    reward: int  # quote units to the liquidator
    remaining: int  # quote units the account keeps
    shortfall: int  # debt written off (AccountDefaulted / DefaultShared)


@dataclass(slots=True)
class AccountDefaulted:
    """After its liquidation the account still owed ``shortfall`` of ``asset``:
    written off its lenders' claims pro rata (DefaultShared per loan);
    ``negative`` of it is a negative balance no lender could take, paid by
    the insurance fund (config.insurance)."""

    account: bytes
    asset: int
    shortfall: int
    negative: int


@dataclass(slots=True)
class DeriskPolicySet:
    account: bytes
    rules: tuple  # flat, 6 ints per rule (SetDeriskPolicy)


@dataclass(slots=True)
class DeriskActionTaken:
    account: bytes
    rule: int  # index of the rule in the policy
    action: int  # liquidation.CANCEL_ALL / REDUCE_PERP / SELL_SPOT / REPAY_LOANS
    target: int  # perp market or asset id (0 for CANCEL_ALL)
    amount: int  # orders cancelled, base units traded, or asset units repaid


@dataclass(slots=True)
class DeriskActionSkipped:
    account: bytes
    rule: int
    action: int
    reason: int  # 1 nothing to do, 2 would increase risk, 3 not executable


@dataclass(slots=True)
class MarketStatusChanged:
    market: int
    status: MarketStatus
