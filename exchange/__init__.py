"""exchange - the exchange as a pure, deterministic state machine.

Responsible for: assets and markets (from configuration), one central limit
order book per market with price-time priority, matching, the unified account
per 20-byte address (free and held balance per asset, open orders), maker and
taker fees, events, a checkpointed undo log, an incremental state digest and
persistence. Part 2 (perpetuals, lending books priced in rates, the portfolio
risk engine, liquidation) plugs in beside spot: new command classes, a clearing
per market kind, positions and loans on the same Account.

It imports the standard library and sortedcontainers only: no EVM, no I/O, no
clock, no floats, no randomness; iteration that can reach an output is in an
explicit order (sorted ids, FIFO links, commutative sums).

Flow of one command::

    Engine.apply(command, ctx)                        engine.py
      |  route by command class
      v
    handler: validate everything  --reject-->  ExchangeError(Reason)  (state untouched)
      |  (spot: SpotClearing.hold_for = the pre-trade check, R1)     clearing.py
      v
    OrderBook.match(order, now) -> outcomes           book.py  (knows ints only)
      |
      v
    SpotClearing.settle: balances, fees, Fill events (R2)            clearing.py
      |  remainder rests (GTC / post-only) or is cancelled (IOC / market / STP)
      v
    (result, [events])   every mutation: undo entry if a checkpoint is open,
                         touched object marked dirty for state_digest()

Modules:
    types.py     enums (Side, TimeInForce, OrderType, SelfTradePrevention,
                 MarketKind, MarketStatus, OrderStatus, CancelReason), Context,
                 FEE_SCALE / RATE_SCALE
    config.py    load(parsed_toml) -> ExchangeConfig; default_config.toml is the
                 default set (USDC, WETH, WBTC; ETH-USDC, BTC-USDC, ETH-PERP, BTC-PERP,
                 USDC-LEND, WETH-LEND) with part 2's risk, funding and lending settings
    commands.py  Deposit, Withdraw, PlaceOrder, CancelOrder, CancelByClientId,
                 CancelAll, ModifyOrder, Batch, ExpireOrders, SetMarketStatus,
                 SetOraclePrice, Tick (the per-block hook); results
    events.py    Deposited, Withdrawn, OrderAccepted, Fill, OrderCancelled,
                 OrderModified, MarketStatusChanged, OracleUpdated, PositionChanged,
                 FundingPaid
    errors.py    ExchangeError, Reason (stable integer codes)
    book.py      Order, Level, OrderBook (fast: linked FIFO levels, SortedList of prices)
    reference.py NaiveBook: the obviously-correct book the fast one is tested against
    accounts.py  Account, Market, fee rounding
    clearing.py  SpotClearing: holds, settlement, release
    perps.py     PerpClearing (MarketKind.PERP): positions (Account.positions),
                 realized PnL through a per-market settlement pool, reduce-only,
                 oracle prices, mark price, funding (premium samples each Tick, a
                 cumulative index settled O(1) per position when touched, exact
                 zero-sum carry), the perp margin check (its what-if reads
                 Account.resting: per-market sums of the resting perp orders,
                 kept as they rest, fill, change and leave), portfolio(account)
    lending.py   LendingClearing (MarketKind.LENDING): books priced in annual
                 rates (lenders SELL offers, borrowers BUY), a Loan per fill on
                 both accounts (Account.loans), exact interest by block time
                 settled on touch, RepayLoan, maturity via a (maturity, id)
                 index in the Tick hook: repay, else roll over against the best
                 offers, else overdue; share_default (pro-rata loss),
                 portfolio_terms(account, now) for the risk model (margin_terms:
                 the checks' form, quote borrowings summed time-invariantly)
    margin.py    AutoBorrowing: a hold or withdrawal beyond the free balance
                 borrows the shortfall from the asset's lending book at the
                 best offers, within portfolio margin (inside a nested
                 checkpoint: a rejection changes nothing); negative free
                 balances (perp losses, funding) borrowed at the next Tick;
                 MarginView (portfolio vs naive margin)
    engine.py    Engine, views, balance_report(), audit()

Per block the chain sends ExpireOrders, then Tick: Engine._tick runs
Engine._block_hooks in order (perps: premium sample and funding payment;
margin: negative free balances into loans; lending: the loans that
matured - repaid, rolled over or overdue).

States of an order: accepted -> (filled | resting | cancelled); resting ->
(filled | cancelled by user, expiry, self-trade prevention). A market is
ACTIVE, CANCEL_ONLY (no new orders or modifies) or HALTED (only expiry).

Errors: every rejection is ExchangeError with a Reason whose integer value is
stable (errors.py lists them); a rejected command changes nothing. Batches
return errors as values, one per action.

Checkpoints: checkpoint() -> token, revert(token), commit(token), nested, backed
by an undo log (no copies), so the EVM can roll the engine back with a reverted
transaction. state_digest() is an additive multiset hash brought up to date
from the objects changed since the last call; to_bytes()/from_bytes() persist.
"""

from .commands import (
    BalanceResult, Batch, BatchResult, CancelAll, CancelAllResult, CancelByClientId, CancelOrder,
    CancelResult, Deposit, ExpireOrders, ExpireResult, ModifyOrder, ModifyResult, OrderResult,
    OracleResult, PlaceOrder, SetMarketStatus, SetOraclePrice, StatusResult, Tick, TickResult, Withdraw,
)
from .config import AssetConfig, ConfigError, CorrelationConfig, ExchangeConfig, MarketConfig, load
from .engine import AssetBalance, BalanceReport, Engine, OrderView
from .errors import ExchangeError, Reason
from .events import (
    Deposited, Fill, FundingPaid, MarketStatusChanged, OracleUpdated, OrderAccepted, OrderCancelled,
    OrderModified, PositionChanged, Withdrawn,
)
from .perps import FundingView, PositionView
from .commands import RepayLoan, RepayResult
from .events import ClaimTakenOver, DefaultShared, InterestPaid, LoanOpened, LoanOverdue, LoanRepaid, LoanRolled
from .lending import LendingClearing, LoanView
from .types import (
    FEE_SCALE, RATE_SCALE, CancelReason, Context, MarketKind, MarketStatus, MarkMethod, OrderStatus,
    OrderType, SelfTradePrevention, Side, TimeInForce,
)

__all__ = [
    "AssetBalance", "AssetConfig", "BalanceReport", "BalanceResult", "Batch", "BatchResult",
    "CancelAll", "CancelAllResult", "CancelByClientId", "CancelOrder", "CancelReason",
    "CancelResult", "ConfigError", "Context", "CorrelationConfig", "Deposit", "Deposited", "Engine", "ExchangeConfig",
    "ExchangeError", "ExpireOrders", "ExpireResult", "FEE_SCALE", "Fill", "FundingPaid", "FundingView", "MarketConfig",
    "MarketKind", "MarketStatus", "MarketStatusChanged", "MarkMethod", "ModifyOrder", "ModifyResult",
    "OracleResult", "OracleUpdated", "OrderAccepted", "OrderCancelled", "OrderModified", "OrderResult",
    "OrderStatus", "OrderType", "OrderView", "PlaceOrder", "PositionChanged", "PositionView", "RATE_SCALE", "Reason", "SelfTradePrevention", "SetMarketStatus", "SetOraclePrice",
    "Side", "StatusResult", "Tick", "TickResult", "TimeInForce", "Withdraw", "Withdrawn", "load",
]
__all__ += [  # lending (exchange/lending.py)
    "ClaimTakenOver", "DefaultShared", "InterestPaid", "LendingClearing", "LoanOpened", "LoanOverdue", "LoanRepaid", "LoanRolled",
    "LoanView", "RepayLoan", "RepayResult",
]
from .commands import ClearDeriskPolicy, DeriskPolicyResult, Liquidate, LiquidateResult, SetDeriskPolicy
from .events import (
    AccountDefaulted, AccountLiquidatable, AccountLiquidated, DeriskActionSkipped, DeriskActionTaken, DeriskPolicySet,
)
from .liquidation import DeriskRule, Solvency

__all__ += [  # liquidation and de-risk policies (exchange/liquidation.py)
    "AccountDefaulted", "AccountLiquidatable", "AccountLiquidated", "ClearDeriskPolicy", "DeriskActionSkipped",
    "DeriskActionTaken", "DeriskPolicyResult", "DeriskPolicySet", "DeriskRule", "Liquidate", "LiquidateResult",
    "SetDeriskPolicy", "Solvency",
]
from .events import AutoBorrowed  # noqa: E402  (unified margin, exchange/margin.py)
from .margin import AutoBorrowing, MarginView  # noqa: E402

__all__ += ["AutoBorrowed", "AutoBorrowing", "MarginView"]
