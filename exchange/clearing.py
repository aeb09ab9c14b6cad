"""Clearing: the money side of a trade, separate from matching.

exchange-core splits an order's life into risk pre-hold (R1), matching (ME)
and risk release / settlement (R2). Here a market's clearing does R1 and R2:

* ``hold_for``   - what an order must hold before it may touch the book (the
                   pre-trade check; part 2's portfolio risk engine replaces it
                   for perp / lending markets);
* ``settle``     - applies the outcomes of ``OrderBook.match`` to balances,
                   fees and events;
* ``trim`` / ``release`` - shrink or free an order's hold.

Spot holds, per order (rounding always against the order's account):

* sell: ``remaining_lots * lot_size`` base units;
* buy, before matching: ``price * lots + ceil(price * lots * max_fee / FEE_SCALE)``
  quote units; once resting, exactly what its remainder can still cost as a
  maker: ``price * remaining + ceil((fee_basis + price * remaining * maker_fee) /
  FEE_SCALE) - fees_paid``. Because fees are charged as the running ceiling of
  the order's cumulative fee basis, the hold always covers the next fill.
"""

from __future__ import annotations

from .book import EXPIRED, Order
from .events import Fill, OrderCancelled
from .types import FEE_SCALE, CancelReason

BUY = 0


class SpotClearing:
    __slots__ = ("engine",)

    def __init__(self, engine) -> None:
        self.engine = engine

    def hold_for(self, market, side: int, price: int, lots: int, crosses: bool) -> tuple[int, int]:
        """(asset index, amount) an incoming order must hold. An order that
        cannot take (``crosses`` False) only ever pays the maker rate."""
        if side == BUY:
            notional = price * lots
            rate = market.max_fee if crosses else market.maker_fee
            return market.quote, notional - (-notional * rate // FEE_SCALE)
        return market.base, lots * market.lot_size

    def hold_asset(self, market, side: int) -> int:
        """The asset an order of ``side`` holds."""
        return market.quote if side == BUY else market.base

    def resting_hold(self, market, o: Order, price: int, lots: int) -> int:
        """What a resting order of ``lots`` at ``price`` must hold from now on."""
        if o.side == BUY:
            notional = price * lots
            # ceil((basis + notional * fee) / S) - fees_paid: the maker fee still to pay.
            return notional - (-(o.fee_basis + notional * market.maker_fee) // FEE_SCALE) - o.fees_paid
        return lots * market.lot_size

    def trim(self, market, o: Order) -> None:
        """After matching, give back what the resting remainder no longer needs
        (price improvement, and the taker-rate part of the fee hold)."""
        excess = o.reserved - self.resting_hold(market, o, o.price, o.remaining)
        if excess:
            self._move_hold(o, market.quote if o.side == BUY else market.base, -excess)

    def release(self, market, o: Order) -> None:
        """Free everything an order that left the book still holds."""
        if o.reserved:
            self._move_hold(o, market.quote if o.side == BUY else market.base, -o.reserved)

    def _move_hold(self, o: Order, asset: int, amount: int) -> None:
        """Move ``amount`` from the account's free balance into the order's hold
        (negative: back to free)."""
        engine = self.engine
        a = o.account
        epoch = engine._epoch
        if a.snap != epoch:
            engine._log.append((_restore_account, a, a.available[:], a.reserved[:], a.snap))
            a.snap = epoch
        if o.snap != epoch:
            o.snap = epoch
            engine._log.append((_restore_order_money, o, o.reserved, o.fee_basis, o.fees_paid))
        a.available[asset] -= amount
        a.reserved[asset] += amount
        o.reserved += amount
        dirty = engine._dirty
        dirty.add(a)
        dirty.add(o)

    def _removed_maker(self, market, maker: Order, outcome: int, events: list) -> None:
        """A resting order the match took off the book without a fill
        (``outcome`` EXPIRED or SELF_TRADE_CANCELLED): unindexed, its hold
        released, an OrderCancelled. Every kind's settle does this alike."""
        self.engine._detach(maker)
        self.release(market, maker)
        reason = CancelReason.EXPIRED if outcome == EXPIRED else CancelReason.SELF_TRADE
        events.append(OrderCancelled(maker.id, maker.account.address, market.id, maker.side,
                                     maker.price, maker.remaining * market.lot_size, reason))

    def _snap_taker(self, taker: Order, fee_account) -> None:
        """Journal the taker's money fields and both accounts a settle changes,
        once per command, and mark the accounts for the digest (the part-2
        settles; this class's own settle has it inlined)."""
        engine = self.engine
        if taker.snap != engine._epoch:
            taker.snap = engine._epoch
            engine._log.append((_restore_order_money, taker, taker.reserved, taker.fee_basis, taker.fees_paid))
        engine._snap(taker.account)
        engine._snap(fee_account)

    def settle(self, market, taker: Order, outcomes: list, events: list, now: int) -> int:
        """Apply match outcomes; returns the lots filled."""
        engine = self.engine
        log_append = engine._log.append
        epoch = engine._epoch
        dirty_add = engine._dirty.add
        fee_account = engine._fee_account
        lot = market.lot_size
        base = market.base
        quote = market.quote
        maker_rate = market.maker_fee
        taker_rate = market.taker_fee
        market_id = market.id
        taker_account = taker.account
        taker_buys = taker.side == BUY
        taker_side = taker.side
        taker_address = taker_account.address
        keep_fills = engine._fills_kept
        push = events.append
        reindex = engine._reindex
        # Snapshots are per command: the first one of an object in a command
        # holds its state before the command, which is all an undo needs.
        if taker.snap != epoch:
            taker.snap = epoch
            log_append((_restore_order_money, taker, taker.reserved, taker.fee_basis, taker.fees_paid))
        for a in (taker_account, fee_account):
            if a.snap != epoch:
                log_append((_restore_account, a, a.available[:], a.reserved[:], a.snap))
                a.snap = epoch
        dirty_add(taker_account)
        dirty_add(fee_account)
        taker_available = taker_account.available
        taker_reserved = taker_account.reserved
        fee_available = fee_account.available
        filled = 0
        taker_left = taker.quantity  # lots; recomputed per fill for the event
        for maker, lots in outcomes:
            if lots <= 0:
                self._removed_maker(market, maker, lots, events)
                continue
            filled += lots
            taker_left -= lots
            price = maker.price
            notional = price * lots
            base_amount = lots * lot
            maker_account = maker.account
            if maker.snap != epoch:
                maker.snap = epoch
                log_append((_restore_order_money, maker, maker.reserved, maker.fee_basis, maker.fees_paid))
            if maker_account.snap != epoch:
                log_append((_restore_account, maker_account, maker_account.available[:],
                            maker_account.reserved[:], maker_account.snap))
                maker_account.snap = epoch
            # fee = ceil(basis_after / S) - ceil(basis_before / S), see accounts.fee_for
            basis = taker.fee_basis
            taker.fee_basis = after = basis + notional * taker_rate
            taker_fee = (basis // -FEE_SCALE) - (after // -FEE_SCALE)
            taker.fees_paid += taker_fee
            basis = maker.fee_basis
            maker.fee_basis = after = basis + notional * maker_rate
            maker_fee = (basis // -FEE_SCALE) - (after // -FEE_SCALE)
            maker.fees_paid += maker_fee
            if taker_buys:
                cost = notional + taker_fee
                taker.reserved -= cost
                taker_reserved[quote] -= cost
                taker_available[base] += base_amount
                maker.reserved -= base_amount
                maker_account.reserved[base] -= base_amount
                maker_account.available[quote] += notional - maker_fee
            else:
                taker.reserved -= base_amount
                taker_reserved[base] -= base_amount
                taker_available[quote] += notional - taker_fee
                cost = notional + maker_fee
                maker.reserved -= cost
                maker_account.reserved[quote] -= cost
                maker_account.available[base] += base_amount
            fee_available[quote] += taker_fee + maker_fee
            if maker_account.spot_resting is not None:  # (None: a part-1 account, nothing kept)
                engine._perps.spot_filled(maker, lots)
            dirty_add(maker_account)
            dirty_add(maker)
            trade_id = engine._next_trade_id
            engine._next_trade_id = trade_id + 1
            fill = Fill(trade_id, market_id, price, base_amount, taker_side,
                        maker.id, maker_account.address, maker.remaining * lot, maker_fee,
                        taker.id, taker_address, taker_left * lot, taker_fee)
            push(fill)
            if keep_fills:  # engine._remember_fill for both sides, inlined and unrolled
                fills = maker_account.fills
                log_append((_forget_fill, maker_account, fills[0] if len(fills) == keep_fills else None))
                fills.append(fill)
                fills = taker_account.fills
                log_append((_forget_fill, taker_account, fills[0] if len(fills) == keep_fills else None))
                fills.append(fill)
            if not maker.remaining:
                # engine._detach(maker), inlined.
                del maker_account.open_orders[maker.id]
                if maker.client_order_id:
                    del maker_account.client_ids[maker.client_order_id]
                if maker.expires_at:
                    engine._expiring.remove((maker.expires_at, maker.id))
                    del engine._expiring_orders[maker.id]
                log_append((reindex, maker))
                left = maker.reserved
                if left:
                    # self.release(market, maker), inlined: a buy maker keeps only
                    # fee rounding slack. Both snapshots were taken above.
                    asset = quote if maker.side == BUY else base
                    maker_account.available[asset] += left
                    maker_account.reserved[asset] -= left
                    maker.reserved = 0
        return filled


def _restore_account(a, available: list, reserved: list, snap: int) -> None:
    a.available[:] = available
    a.reserved[:] = reserved
    # The snapshot epoch too: an undone change leaves no trace in what reads the
    # epochs (liquidation.Solvency.note marks the accounts changed since the last
    # re-banding; a reverted eth_call must not mark anyone). A lower epoch only
    # makes the next change journal again.
    a.snap = snap
    # The engine's dirty set is reached through the undo runner, which marks
    # every account it restores; see Engine._undo_to.


def _forget_fill(a, dropped) -> None:
    a.fills.pop()
    if dropped is not None:
        a.fills.appendleft(dropped)


def _restore_order_money(o: Order, reserved: int, fee_basis: int, fees_paid: int) -> None:
    o.reserved = reserved
    o.fee_basis = fee_basis
    o.fees_paid = fees_paid
