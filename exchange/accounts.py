"""The unified account and the runtime market.

One :class:`Account` per 20-byte address holds, per asset, a free
(``available``) and a held (``reserved``) balance, and the account's open
orders. Part 2 adds positions and loans beside them; the risk engine reads
the whole account, which is why it is one object rather than per-market
sub-accounts.
"""

from __future__ import annotations

from collections import deque

from .book import OrderBook
from .config import MarketConfig
from .types import FEE_SCALE, MarketKind, MarketStatus


class Account:
    __slots__ = ("address", "available", "reserved", "open_orders", "client_ids", "fills", "exists", "snap", "digest_term",
                 "positions", "loans", "loans_snap", "resting", "resting_gen", "spot_resting", "spot_gen")

    def __init__(self, address: bytes, assets: int, fills_kept: int) -> None:
        self.address = address
        self.available = [0] * assets  # free balance per asset index
        self.reserved = [0] * assets  # held by open orders, per asset index
        self.open_orders: dict = {}  # order id -> Order; iterate sorted by id, never by dict order
        self.client_ids: dict | None = None  # client order id -> Order, made on first use
        self.fills = deque(maxlen=fills_kept) if fills_kept else None  # recent Fill events (a view)
        self.exists = True  # False once the creation is undone (for the digest)
        self.snap = -1  # engine epoch (command count) of the last undo snapshot
        self.digest_term = 0
        # perp market id -> perps.Position (its own digest term and undo entries)
        self.positions: dict = {}
        # loan id -> lending.Loan, lent or borrowed (its own digest term and undo entries)
        self.loans: dict = {}
        # engine epoch of the last change to any of its loans (set by lending's
        # journalling; only a cache key for LendingClearing.terms_by_id)
        self.loans_snap = -1
        # Sums over the account's resting perp orders, per perp market id:
        # [buy lots, buy price x lots, buy held, sell lots, sell price x lots,
        # sell held] (the margin check's what-if, perps.PerpClearing). Valid
        # while resting_gen equals PerpClearing.resting_gen (an undo bumps it).
        self.resting: dict | None = None
        self.resting_gen = -1
        # The same for its resting SPOT orders, per spot market id: [buy lots,
        # sell lots, lots + each order's worst fee] (PerpClearing.
        # _spot_what_if). None until the first portfolio check that reads
        # them: a part-1 account never keeps them (the spot hot path tests
        # ``spot_resting is not None`` and nothing else). Valid while
        # spot_gen equals PerpClearing.resting_gen.
        self.spot_resting: dict | None = None
        self.spot_gen = -1


class Market:
    """A configured market with its book and live status."""

    __slots__ = (
        "id", "symbol", "kind", "base", "quote", "lot_size", "tick_size",
        "min_notional", "maker_fee", "taker_fee", "max_fee", "status", "book",
        "clearing", "digest_term", "config",
    )

    def __init__(self, cfg: MarketConfig, base_index: int, quote_index: int, dirty: set) -> None:
        self.id = cfg.id
        self.symbol = cfg.symbol
        self.kind = MarketKind(cfg.kind)
        self.base = base_index  # asset index (position in config.assets), not id
        self.quote = quote_index
        self.lot_size = cfg.lot_size
        self.tick_size = cfg.tick_size
        self.min_notional = cfg.min_notional
        self.maker_fee = cfg.maker_fee
        self.taker_fee = cfg.taker_fee
        # A buy holds enough for the worse of the two rates: it may take first
        # and rest after, and the hold must cover either path.
        self.max_fee = max(cfg.maker_fee, cfg.taker_fee)
        self.status = MarketStatus(cfg.status)
        self.book = OrderBook(cfg.id, dirty)
        self.clearing = None  # set by the engine: the clearing of this market's kind
        self.digest_term = 0
        self.config = cfg  # the MarketConfig (kind-specific settings: perp funding, loan term)


def fee_for(basis_before: int, basis_after: int) -> int:
    """The fee of one fill when an order's cumulative fee basis moves from
    ``basis_before`` to ``basis_after`` (notional x rate, not yet scaled).

    Rounding goes against the account charged: the order pays
    ceil(total basis / FEE_SCALE) over its life, charged piece by piece, so
    splitting an order into many fills never charges more (or less) than that.
    """
    return -(-basis_after // FEE_SCALE) + (-basis_before // FEE_SCALE)
