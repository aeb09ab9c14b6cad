"""Commands (what an account asks) and results (what it gets back).

Plain slotted dataclasses, one per action, in the manner of exchange-core's
``common/api/Api*`` objects. ``account`` is always the 20-byte address the
chain saw as ``msg.sender``: the engine trusts it and checks ownership with it.
Quantities are in base units (whole lots), prices in quote units per lot on the
tick grid (see ``exchange.config``). Part 2 adds commands (oracle prices,
borrow / lend, de-risk policies, liquidate) as new classes; the engine routes by
class, so nothing here changes.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ExchangeError
from .types import MarketStatus, OrderStatus, OrderType, SelfTradePrevention, Side, TimeInForce


@dataclass(slots=True)
class Deposit:
    account: bytes
    asset: int
    amount: int


@dataclass(slots=True)
class Withdraw:
    account: bytes
    asset: int
    amount: int


@dataclass(slots=True)
class PlaceOrder:
    account: bytes
    market: int
    side: Side
    price: int  # limit price; for a MARKET order the worst acceptable price
    quantity: int  # base units, a whole number of lots
    time_in_force: TimeInForce = TimeInForce.GTC
    order_type: OrderType = OrderType.LIMIT
    client_order_id: int = 0  # 0 = none; else unique among the account's open orders
    stp: SelfTradePrevention = SelfTradePrevention.CANCEL_INCOMING
    expires_at: int = 0  # block timestamp at which a resting order expires; 0 = never
    # Perp markets only: the order may only shrink the account's position
    # (see exchange/perps.py for what happens to the part that would not).
    reduce_only: bool = False


@dataclass(slots=True)
class CancelOrder:
    account: bytes
    order_id: int


@dataclass(slots=True)
class CancelByClientId:
    account: bytes
    client_order_id: int


@dataclass(slots=True)
class CancelAll:
    account: bytes
    market: int | None = None  # None = every market


@dataclass(slots=True)
class ModifyOrder:
    """Change a resting order's price and/or its open (remaining) quantity.

    A quantity decrease at the same price keeps time priority; a price change
    or a quantity increase re-queues at the back of the (new) level. A modify
    never takes liquidity: one that would cross is rejected.
    """

    account: bytes
    order_id: int
    price: int
    quantity: int  # the new remaining quantity, base units


@dataclass(slots=True)
class Batch:
    """Up to ``max_batch_actions`` actions of one account, applied in order;
    each gets its own result or error, and a failed action changes nothing."""

    account: bytes
    actions: tuple


@dataclass(slots=True)
class ExpireOrders:
    """Cancel every resting order whose ``expires_at`` <= the block timestamp.

    The chain sends it at the start of each block. Matching never fills an
    expired order even before this runs: it removes it when it meets it.
    """

    limit: int = 0  # most orders to expire in this command; 0 = all due


@dataclass(slots=True)
class SetOraclePrice:
    account: bytes  # must be the configured oracle
    asset: int  # asset id
    price: int  # quote units per ONE WHOLE token (10**decimals smallest units)


@dataclass(slots=True)
class Tick:
    """The per-block hook: the chain sends one per block, after ExpireOrders.

    Runs ``Engine._block_hooks`` in order (perp funding samples and payments,
    loan expiry and roll-over); each hook appends its events."""


@dataclass(slots=True)
class SetMarketStatus:
    account: bytes  # must be the configured admin
    market: int
    status: MarketStatus


@dataclass(slots=True)
class RepayLoan:
    """The borrower repays up to ``amount`` of an open loan now (exchange/lending.py):
    accrued interest first, then principal; more than is owed repays it all."""

    account: bytes
    loan_id: int
    amount: int  # asset units


# ---- results -------------------------------------------------------------


@dataclass(slots=True)
class BalanceResult:
    asset: int
    available: int  # free balance after the command


@dataclass(slots=True)
class OrderResult:
    order_id: int
    status: OrderStatus
    filled_quantity: int  # base units filled by this command
    remaining_quantity: int  # base units resting (0 unless RESTING)


@dataclass(slots=True)
class CancelResult:
    order_id: int
    remaining_quantity: int  # base units that were still open


@dataclass(slots=True)
class CancelAllResult:
    cancelled: int


@dataclass(slots=True)
class ModifyResult:
    order_id: int
    requeued: bool


@dataclass(slots=True)
class BatchResult:
    results: tuple  # each a result object or an ExchangeError, in action order

    def errors(self) -> list[ExchangeError]:
        return [r for r in self.results if isinstance(r, ExchangeError)]


@dataclass(slots=True)
class ExpireResult:
    expired: int


@dataclass(slots=True)
class OracleResult:
    asset: int
    price: int


@dataclass(slots=True)
class TickResult:
    block_number: int
    timestamp: int


@dataclass(slots=True)
class StatusResult:
    market: int
    status: MarketStatus


@dataclass(slots=True)
class RepayResult:
    loan_id: int
    interest_paid: int  # asset units of interest this command paid
    principal_paid: int  # asset units of principal this command paid
    principal_left: int  # 0 once the loan is closed
    interest_due: int  # accrued and still unpaid (0 once closed)


# ---- liquidation and de-risk policies (exchange/liquidation.py) ----


@dataclass(slots=True)
class SetDeriskPolicy:
    """Replace the account's de-risk policy. ``rules``: flat ints, 6 per rule in
    the order they run - (condition, subject, threshold, action, target,
    amount), see liquidation.DeriskRule; on the ABI a uint256[]."""

    account: bytes
    rules: tuple


@dataclass(slots=True)
class ClearDeriskPolicy:
    account: bytes


@dataclass(slots=True)
class Liquidate:
    """Anyone liquidates ``account`` once its liquidation-level available margin is <= 0."""

    liquidator: bytes
    account: bytes


@dataclass(slots=True)
class DeriskPolicyResult:
    rules: int  # rules now in force


@dataclass(slots=True)
class LiquidateResult:
    account: bytes
    reward: int  # quote units paid to the liquidator
    remaining: int  # quote units the account keeps (after the reward)
    shortfall: int  # debt written off (0 unless the account defaulted)
