"""Lending markets: a book of interest rates, loans, accrual, maturity and
roll-over, and the pro-rata sharing of a borrower's default.

``LendingClearing`` is the clearing of ``MarketKind.LENDING`` markets (the
engine routes by kind; see clearing.py for the R1 / R2 split). A lending
market lends one asset (its base == quote). Its book is part 1's
``OrderBook`` with the **annual interest rate** (``RATE_SCALE`` parts a
year) as the price and the amount in lots of the asset as the quantity:

* a lender places a SELL (an offer: lend ``quantity`` at ``price`` or
  more); it holds the amount (plus its worst fee, if the market has fees);
* a borrower places a BUY (take offers up to ``price``, or rest a bid);
  it holds nothing - what makes a borrow safe is the portfolio margin
  check (``check_order`` / ``_check_borrow``: the borrow and the account's
  other lending bids filled in full, their interest to term deducted, must
  leave opening-level available margin >= 0; exchange/risk.py through the
  portfolio built by perps.py);
* every fill opens a **Loan** at the maker's rate: ``principal`` = the
  filled amount moves from the lender's hold to the borrower's free
  balance; ``start`` = block time, ``maturity`` = start + the market's
  ``loan_term``. Fees, when configured: the lender's comes out of its hold,
  the borrower's out of the principal it receives; both are running
  ceilings of ``amount x rate`` as on spot (``accounts.fee_for``).

Interest, exactly (``D = RATE_SCALE x 31_536_000``): a loan accrues in
segments of constant principal; for a segment that began at ``accrual_start``

    accrued by time t = ceil(principal * rate * (t - accrual_start) / D)

(rounded against the borrower). A touch at t moves ``accrued(t) - accrued so
far`` into ``interest_due``; a new segment starts only when the principal
changes, so how often a loan is touched never changes what it costs; a touch
at a time before the last one adds nothing (interest never goes back). Interest
moves only in payments from the borrower's free balance to the lender's free
balance (``InterestPaid``): the lender receives exactly what the borrower pays.

Life of a loan (states: open -> closed, or open -> overdue -> closed)::

    fill ──► open ──RepayLoan (early, any part: interest first)──► closed
               │
               └─ Tick at maturity: accrue; if the borrower's free balance is
                  short, borrow the shortfall (whole lots, rounded up) against
                  the best offers on the book, each offer taken a new loan at
                  its rate and a new term (LoanRolled); then pay interest and
                  principal from the free balance ──► closed (LoanRepaid)
                  whatever is still owed ──► overdue (LoanOverdue): it keeps
                  accruing at its rate, RepayLoan still works, and phase 2's
                  default handling takes it from there (``share_default``).

Work per block: loans are indexed by ``(maturity, id)`` in a SortedList, so
the Tick hook visits only the loans that are due - never all loans. Roll-over
skips the borrower's own offers and expired ones, and runs only while the
market is ACTIVE; the borrower pays no taker fee on a roll-over (the engine
acts for it), the offers pay their maker fee.

Defaults (``share_default``): an account that cannot pay ``shortfall`` of
an asset cuts the claims of the lenders of its open loans in that asset pro
rata to each claim (principal + interest due), floor, with the units left by
flooring going to the largest remainders (ties: lower loan id). Events
``DefaultShared``, one per loan.

Errors: ``UNKNOWN_LOAN`` (40: RepayLoan of a loan the account did not
borrow, or not open), ``INSUFFICIENT_MARGIN`` (50: a borrow), and part 1's
order rules (the rate on the tick grid, whole lots, INSUFFICIENT_BALANCE for
an offer's hold). Offers and roll-overs are not margin-checked: an offer
holds its amount; a roll-over replaces a debt by one of the same size.

State rules as part 1: every change is journalled for ``Engine.revert``
(``_restore_loan`` puts back a loan's fields *and* its index entries), loans
and the loan counter are digest objects (tags ``LL`` / ``LN``), ``state()`` /
``load_state()`` persist them for ``Engine.to_bytes``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sortedcontainers import SortedList

from .book import Order
from .clearing import SpotClearing, _restore_order_money
from .commands import RepayLoan, RepayResult
from .errors import ExchangeError, Reason
from .events import (
    ClaimTakenOver, DefaultShared, Fill, InterestPaid, LoanOpened, LoanOverdue, LoanRepaid, LoanRolled,
)
from .types import FEE_SCALE, RATE_SCALE, MarketKind, MarketStatus, Side

BUY = 0
SELL = 1
YEAR = 31_536_000  # seconds in the 365-day year an annual rate is quoted for
INTEREST_DIVISOR = RATE_SCALE * YEAR
_NO_TERMS: list = []  # shared, never mutated (callers of margin_terms must not mutate its lists)
_NEVER = 1 << 62  # margin_terms' "valid before" when no loan is fixed


def offers_to_take(market, borrower, lots: int, now: int) -> tuple[list, int]:
    """([(offer, lots)], lots still missing): the lending book's offers that lend
    ``lots``, best rate first, FIFO within a rate, skipping the borrower's own and
    expired ones. Decided before any book change, so levels are not mutated while
    walked (roll-overs here, automatic borrowing in margin.py)."""
    plan = []
    for level in market.book.asks.iter_levels():
        o = level.head
        while o is not None and lots:
            if o.account is not borrower and not (o.expires_at and o.expires_at <= now):
                take = min(lots, o.remaining)
                plan.append((o, take))
                lots -= take
            o = o.next
        if not lots:
            break
    return plan, lots


def interest(principal: int, rate: int, seconds: int) -> int:
    """Interest on ``principal`` at ``rate`` (RATE_SCALE parts a year) for
    ``seconds``: rounded up, against the borrower."""
    return -(-principal * rate * seconds // INTEREST_DIVISOR)


class Loan:
    """One loan between two accounts; lives in both accounts' ``loans``."""

    __slots__ = ("id", "market", "asset", "lender", "borrower", "rate", "start", "maturity",
                 "principal", "accrual_start", "accrued", "interest_due", "interest_paid", "overdue",
                 "open", "snap", "digest_term")

    def __init__(self, id: int, market: int, asset: int, lender, borrower, principal: int, rate: int,
                 start: int, maturity: int) -> None:
        self.id = id
        self.market = market  # lending market id
        self.asset = asset  # asset index
        self.lender = lender  # Account
        self.borrower = borrower  # Account
        self.rate = rate  # RATE_SCALE parts a year
        self.start = start  # block time
        self.maturity = maturity  # block time
        self.principal = principal  # asset units still lent
        self.accrual_start = start  # start of the current constant-principal segment
        self.accrued = 0  # interest of the current segment already moved into interest_due
        self.interest_due = 0  # accrued and not yet paid
        self.interest_paid = 0  # paid over the loan's life
        self.overdue = False  # matured and not fully repaid or rolled
        self.open = False
        self.snap = -1
        self.digest_term = 0

    def fields(self) -> tuple:
        return (self.principal, self.accrual_start, self.accrued, self.interest_due, self.interest_paid,
                self.overdue, self.open)

    def digest_encoding(self) -> bytes | None:
        if not self.open:
            return None
        return b"LL%d,%d,%d,%b,%b,%d,%d,%d,%d,%d,%d,%d,%d,%d" % (
            self.id, self.market, self.asset, self.lender.address, self.borrower.address, self.rate,
            self.start, self.maturity, self.principal, self.accrual_start, self.accrued,
            self.interest_due, self.interest_paid, self.overdue)

    def pending(self, now: int) -> int:
        """Interest accrued since the last touch and not yet in interest_due."""
        pending = interest(self.principal, self.rate, max(0, now - self.accrual_start)) - self.accrued
        return pending if pending > 0 else 0  # never negative: an earlier time than the last touch owes no less

    def owed(self, now: int) -> int:
        """What the borrower owes at ``now``: principal and all interest due."""
        return self.principal + self.interest_due + self.pending(now)

    def interest_to_term(self, now: int) -> int:
        """Interest the current principal will still accrue until maturity
        (0 once overdue or past maturity)."""
        if self.overdue or now >= self.maturity:
            return 0
        elapsed = max(0, now - self.accrual_start)
        span = self.maturity - self.accrual_start
        return interest(self.principal, self.rate, span) - interest(self.principal, self.rate, elapsed)


class LoanLedger:
    """The loan id counter, a digest object of its own."""

    __slots__ = ("next_loan_id", "digest_term")

    def __init__(self) -> None:
        self.next_loan_id = 1
        self.digest_term = 0

    def digest_encoding(self) -> bytes:
        return b"LN%d" % self.next_loan_id


class LendingClearing(SpotClearing):
    """Clearing of lending markets; also the home of loans, their Tick hook,
    RepayLoan, share_default and the lending views.

    Subclasses SpotClearing for ``_move_hold``; the engine's inlined spot
    paths test ``clearing.__class__ is SpotClearing``, so they never run here.
    """

    __slots__ = ("loans", "by_maturity", "overdue", "ledger", "asset_ids", "asset_indexes", "_terms_cache",
                 "_fixed_cache", "_quote")

    def __init__(self, engine) -> None:
        super().__init__(engine)
        self.loans: dict[int, Loan] = {}  # open loans by id (iterate sorted)
        self.by_maturity = SortedList()  # (maturity, id) of open loans not yet overdue
        self.overdue = SortedList()  # ids of overdue loans
        self.ledger = LoanLedger()
        self.asset_ids = [a.id for a in engine.config.assets]
        self.asset_indexes = list(range(len(self.asset_ids)))
        # Account -> (now, epoch, number of loans, lent, borrowed): terms_by_id's cache
        self._terms_cache: dict = {}
        # Account -> margin_terms' split of its loans (see there)
        self._fixed_cache: dict = {}
        self._quote = None  # asset index of the risk model's quote, on first use

    def setup(self) -> None:
        """Called by the engine once its markets exist."""
        self.engine._dirty.add(self.ledger)

    # ==== journalling and indexes =========================================

    def _touch(self, loan: Loan, now: int) -> None:
        """Journal ``loan`` (once per command) and bring its interest up to ``now``."""
        engine = self.engine
        if loan.snap != engine._epoch:
            engine._log.append((self._restore_loan, loan, loan.fields(), loan.snap))
            loan.snap = loan.lender.loans_snap = loan.borrower.loans_snap = engine._epoch
        engine._dirty.add(loan)
        if now > loan.accrual_start:
            total = interest(loan.principal, loan.rate, now - loan.accrual_start)
            if total > loan.accrued:  # interest only grows: a context earlier than the last touch adds none
                loan.interest_due += total - loan.accrued
                loan.accrued = total

    def _restore_loan(self, loan: Loan, fields: tuple, snap: int) -> None:
        self._unindex(loan)
        (loan.principal, loan.accrual_start, loan.accrued, loan.interest_due, loan.interest_paid,
         loan.overdue, loan.open) = fields
        # The snapshot epoch too (see clearing._restore_account); the parties'
        # loans_snap only keys caches, which Engine.revert clears.
        loan.snap = snap
        self._index(loan)

    def _index(self, loan: Loan) -> None:
        if not loan.open:
            return
        self.loans[loan.id] = loan
        loan.lender.loans[loan.id] = loan
        loan.borrower.loans[loan.id] = loan
        if loan.overdue:
            self.overdue.add(loan.id)
        else:
            self.by_maturity.add((loan.maturity, loan.id))

    def _unindex(self, loan: Loan) -> None:
        if not loan.open:
            return
        del self.loans[loan.id]
        del loan.lender.loans[loan.id]
        del loan.borrower.loans[loan.id]
        if loan.overdue:
            self.overdue.remove(loan.id)
        else:
            self.by_maturity.remove((loan.maturity, loan.id))

    def _set_state(self, loan: Loan, open: bool, overdue: bool) -> None:
        """Change a (touched) loan's state and its index entries together."""
        self._unindex(loan)
        loan.open = open
        loan.overdue = overdue
        self._index(loan)

    def _set_principal(self, loan: Loan, principal: int, now: int) -> None:
        """A (touched, accrued to ``now``) loan's principal changes: a new
        accrual segment starts."""
        loan.principal = principal
        loan.accrual_start = now
        loan.accrued = 0

    def _new_loan_id(self) -> int:
        ledger = self.ledger
        loan_id = ledger.next_loan_id
        self.engine._log.append((_restore_next_loan_id, ledger, loan_id))
        ledger.next_loan_id = loan_id + 1
        self.engine._dirty.add(ledger)
        return loan_id

    def _open_loan(self, market, lender, borrower, principal: int, rate: int, now: int, events: list,
                   rolled_from: int = 0) -> Loan:
        loan = Loan(self._new_loan_id(), market.id, market.base, lender, borrower, principal, rate, now,
                    now + market.config.loan_term)
        engine = self.engine
        engine._log.append((self._restore_loan, loan, loan.fields(), -1))  # undo: back to not open, never journalled
        loan.snap = lender.loans_snap = borrower.loans_snap = engine._epoch
        self._set_state(loan, True, False)
        engine._dirty.add(loan)
        events.append(LoanOpened(loan.id, market.id, lender.address, borrower.address,
                                 self.asset_ids[loan.asset], principal, rate, loan.start, loan.maturity,
                                 rolled_from))
        return loan

    # ==== R1: the pre-trade check and holds ===============================

    def hold_for(self, market, side: int, price: int, lots: int, crosses: bool) -> tuple[int, int]:
        """A lender's offer holds the amount plus its worst fee; a borrower's
        bid holds nothing (the margin check stands for it)."""
        if side == BUY:
            return market.base, 0
        amount = lots * market.lot_size
        rate = market.max_fee if crosses else market.maker_fee
        return market.base, amount - (-amount * rate // FEE_SCALE)

    def hold_asset(self, market, side: int) -> int:
        return market.base

    def _resting(self, market, o: Order, lots: int) -> int:
        if o.side == BUY:
            return 0
        amount = lots * market.lot_size
        # ceil((basis + amount * fee) / S) - fees_paid: the maker fee still to pay.
        return amount - (-(o.fee_basis + amount * market.maker_fee) // FEE_SCALE) - o.fees_paid

    def resting_hold(self, market, o: Order, price: int, lots: int) -> int:
        """Called by ModifyOrder before it changes anything: a bid that asks
        for more (or at another rate) passes the margin check again."""
        if lots > o.remaining or price != o.price:
            if o.side == BUY:
                self._check_borrow(market, o.account, price, lots, replacing=o)
            else:
                self._check_lend(market, o.account, lots, replacing=o)
        return self._resting(market, o, lots)

    def trim(self, market, o: Order) -> None:
        excess = o.reserved - self._resting(market, o, o.remaining)
        if excess:
            self._move_hold(o, market.base, -excess)

    def release(self, market, o: Order) -> None:
        if o.reserved:
            self._move_hold(o, market.base, -o.reserved)

    def check_order(self, market, account, side: int, price: int, lots: int, tif, reduce_only: bool,
                    crosses: bool) -> int:
        """What a lending order must pass besides the part-1 rules."""
        if reduce_only:
            raise ExchangeError(Reason.INVALID_ORDER, "reduce-only is for perp orders")
        if side == BUY:
            self._check_borrow(market, account, price, lots)
        else:
            self._check_lend(market, account, lots)
        return lots

    def _check_lend(self, market, account, lots: int, replacing=None) -> None:
        """INSUFFICIENT_MARGIN unless the offer, lent in full paying its worst
        fee, with the account's other resting offers on lending books
        (``replacing`` excluded) lent the same way, leaves opening-level
        available margin >= 0. Lending turns cash into a claim that counts at
        its credit factor (98 % by default), so it lowers the margin: an
        account with positions, resting perp orders, loans or a negative
        balance could otherwise lend itself below zero (found by review). An
        account with none of them cannot go below zero and is not checked."""
        engine = self.engine
        perps = getattr(engine, "_perps", None)
        if getattr(perps, "portfolio_of", None) is None or not perps._margined(account):
            return
        portfolio, prices = perps.portfolio_of(account, engine._now, None, None, True, True)
        ids = self.asset_ids
        balances = portfolio.balances
        lent = list(portfolio.lent)
        offers = [(market, lots)]
        for oid in sorted(account.open_orders):
            o = account.open_orders[oid]
            if o is not replacing and o.side == SELL:
                m = engine._markets[o.market]
                if m.kind is MarketKind.LENDING:
                    offers.append((m, o.remaining))
        for m, n in offers:
            amount = n * m.lot_size
            key = ids[m.base]
            balances[key] = balances.get(key, 0) - amount + (-amount * m.max_fee // FEE_SCALE)  # minus ceil(fee)
            lent.append((key, amount))
        portfolio.lent = lent
        available = perps._available(perps.risk_model(), portfolio, prices)
        if available < 0:
            raise ExchangeError(Reason.INSUFFICIENT_MARGIN, f"available margin {available}")

    def _check_borrow(self, market, account, rate: int, lots: int, replacing=None) -> None:
        """INSUFFICIENT_MARGIN unless the borrow, filled in full at ``rate``
        for the market's whole term, with the account's other resting bids on
        lending books (``replacing`` excluded) filled the same way, leaves
        opening-level available margin (exchange/risk.py) >= 0. A borrow adds
        the amount less its worst fee to the balance and the amount to the
        debt beside it, so what it costs in margin is the fee and the interest
        to term (and, for an asset with price risk, the rounding of the two
        values against the account)."""
        engine = self.engine
        perps = getattr(engine, "_perps", None)
        portfolio_of = getattr(perps, "portfolio_of", None)
        if portfolio_of is None:  # no portfolio risk engine in this build: not margin-checked
            return
        if replacing is None and self._borrow_fast(market, account, rate, lots) is not None:
            return  # at or above zero (the full path's same figure)
        available = self._borrow_available(market, account, rate, lots, replacing)
        if available < 0:
            raise ExchangeError(Reason.INSUFFICIENT_MARGIN, f"available margin {available}")

    def _borrow_fast(self, market, account, rate: int, lots: int) -> int | None:
        """_borrow_available's figure (no order replaced) by the checks' fast
        path (PerpClearing._floor_available), or None (the full path answers).
        It answers a borrow of the risk model's quote asset by an account with
        no other resting bid on a lending book: such a borrowing counts as
        ``equity -= owed``, ``deductions += interest`` beside the amount
        received, so the whole borrow is one move of the quote balance - its
        fee (rounded against the account) less its interest to term.
        tests/exchange/test_floor_available.py compares the two."""
        key = self.asset_ids[market.base]
        perps = self.engine._perps
        if key != perps.risk_model().quote or self._other_bids(account):
            return None
        amount = lots * market.lot_size
        move = (-amount * market.max_fee // FEE_SCALE) - interest(amount, rate, market.config.loan_term)
        return perps._floor_available(account, self.engine._now, None, ((key, move),))

    def _borrow_available(self, market, account, rate: int, lots: int, replacing) -> int:
        """_check_borrow's figure on the full path (PerpClearing._available of
        the portfolio with the borrows)."""
        engine = self.engine
        perps = engine._perps
        ids = self.asset_ids
        portfolio, prices = perps.portfolio_of(account, engine._now, None, None, True, True)  # available alone
        balances = portfolio.balances
        borrowed = list(portfolio.borrowed)
        bids = [(market, rate, lots)]
        for oid in sorted(account.open_orders):
            o = account.open_orders[oid]
            if o is not replacing and o.side == BUY:
                m = engine._markets[o.market]
                if m.kind is MarketKind.LENDING:
                    bids.append((m, o.price, o.remaining))
        for m, r, n in bids:
            amount = n * m.lot_size
            key = ids[m.base]
            # what the borrower receives: the amount less its worst fee (found by review)
            balances[key] = balances.get(key, 0) + amount + (-amount * m.max_fee // FEE_SCALE)
            borrowed.append((key, amount, interest(amount, r, m.config.loan_term)))
        portfolio.borrowed = borrowed
        return perps._available(perps.risk_model(), portfolio, prices)

    def _other_bids(self, account) -> bool:
        """Whether ``account`` has a resting bid on a lending book."""
        markets = self.engine._markets
        lending = MarketKind.LENDING
        for o in account.open_orders.values():
            if o.side == BUY and markets[o.market].kind is lending:
                return True
        return False

    # ==== R2: settlement: every fill opens a loan =========================

    def settle(self, market, taker: Order, outcomes: list, events: list, now: int) -> int:
        engine = self.engine
        log_append = engine._log.append
        epoch = engine._epoch
        dirty_add = engine._dirty.add
        fee_account = engine._fee_account
        lot = market.lot_size
        asset = market.base
        maker_rate = market.maker_fee
        taker_rate = market.taker_fee
        market_id = market.id
        taker_account = taker.account
        taker_lends = taker.side == SELL
        push = events.append
        self._snap_taker(taker, fee_account)
        dirty_add(taker_account)
        dirty_add(fee_account)
        filled = 0
        taker_left = taker.quantity
        for maker, lots in outcomes:
            if lots <= 0:
                self._removed_maker(market, maker, lots, events)
                continue
            filled += lots
            taker_left -= lots
            amount = lots * lot
            maker_account = maker.account
            if maker.snap != epoch:
                maker.snap = epoch
                log_append((_restore_order_money, maker, maker.reserved, maker.fee_basis, maker.fees_paid))
            engine._snap(maker_account)
            dirty_add(maker_account)
            dirty_add(maker)
            # Fees: running ceilings of amount x rate (accounts.fee_for).
            basis = taker.fee_basis
            taker.fee_basis = after = basis + amount * taker_rate
            taker_fee = (basis // -FEE_SCALE) - (after // -FEE_SCALE)
            taker.fees_paid += taker_fee
            basis = maker.fee_basis
            maker.fee_basis = after = basis + amount * maker_rate
            maker_fee = (basis // -FEE_SCALE) - (after // -FEE_SCALE)
            maker.fees_paid += maker_fee
            if taker_lends:
                lender_order, lender_fee, borrower, borrower_fee = taker, taker_fee, maker_account, maker_fee
            else:
                lender_order, lender_fee, borrower, borrower_fee = maker, maker_fee, taker_account, taker_fee
            lender = lender_order.account
            lender_order.reserved -= amount + lender_fee
            lender.reserved[asset] -= amount + lender_fee
            borrower.available[asset] += amount - borrower_fee
            fee_account.available[asset] += lender_fee + borrower_fee
            trade_id = engine._next_trade_id
            engine._next_trade_id = trade_id + 1
            fill = Fill(trade_id, market_id, maker.price, amount, taker.side,
                        maker.id, maker_account.address, maker.remaining * lot, maker_fee,
                        taker.id, taker_account.address, taker_left * lot, taker_fee)
            push(fill)
            if engine._fills_kept:
                engine._remember_fill(maker_account, fill)
                engine._remember_fill(taker_account, fill)
            self._open_loan(market, lender, borrower, amount, maker.price, now, events)
            if not maker.remaining:
                engine._detach(maker)
                self.release(market, maker)
        return filled

    # ==== the Tick hook: maturity, repayment, roll-over ===================

    def on_block(self, ctx, events: list) -> None:
        """Settle every loan whose maturity has come, earliest first (by id
        within a maturity); visits only those."""
        now = ctx.timestamp
        due = self.by_maturity
        while due and due[0][0] <= now:
            self._mature(self.loans[due[0][1]], now, events)

    def _mature(self, loan: Loan, now: int, events: list) -> None:
        """Repay ``loan`` at maturity, rolling over what the borrower's free
        balance cannot cover; what is left is overdue. Always takes the loan
        out of ``by_maturity`` (closed or overdue)."""
        self._touch(loan, now)
        borrower = loan.borrower
        asset = loan.asset
        owed = loan.principal + loan.interest_due
        short = owed - borrower.available[asset]
        if short > 0:
            market = self.engine._markets[loan.market]
            if market.status is MarketStatus.ACTIVE:
                self._roll(market, loan, short, now, events)
        # max(0, ...): a free balance left negative (a perp loss) pays nothing here.
        self._pay(loan, max(0, min(owed, borrower.available[asset])), now, events, at_maturity=True)
        if loan.open:
            self._set_state(loan, True, True)
            events.append(LoanOverdue(loan.id, loan.lender.address, borrower.address, self.asset_ids[asset],
                                      loan.principal, loan.interest_due))

    def _roll(self, market, loan: Loan, short: int, now: int, events: list) -> None:
        """Borrow ``short`` (rounded up to whole lots) for ``loan``'s borrower
        against the best offers, best rate first, FIFO within a rate."""
        borrower = loan.borrower
        lot = market.lot_size
        # Lots: the book trades whole lots; the excess stays free.
        plan, _short_lots = offers_to_take(market, borrower, -(-short // lot), now)
        if not plan:
            return
        new_loans = []
        borrowed = 0
        for o, lots in plan:
            new_loans.append(self._take_offer(market, o, lots, borrower, now, events, loan.id))
            borrowed += lots * lot
        events.append(LoanRolled(loan.id, borrower.address, self.asset_ids[loan.asset], borrowed,
                                 tuple(new_loans)))

    def _take_offer(self, market, o: Order, lots: int, borrower, now: int, events: list, rolled_from: int) -> int:
        """Fill ``lots`` of the resting offer ``o`` to ``borrower`` (a roll-over:
        no taker order, no taker fee); returns the new loan's id."""
        engine = self.engine
        epoch = engine._epoch
        log_append = engine._log.append
        lender = o.account
        fee_account = engine._fee_account
        asset = market.base
        lot = market.lot_size
        amount = lots * lot
        if o.snap != epoch:
            o.snap = epoch
            log_append((_restore_order_money, o, o.reserved, o.fee_basis, o.fees_paid))
        for a in (lender, borrower, fee_account):
            engine._snap(a)
            engine._dirty.add(a)
        basis = o.fee_basis
        o.fee_basis = after = basis + amount * market.maker_fee
        fee = (basis // -FEE_SCALE) - (after // -FEE_SCALE)
        o.fees_paid += fee
        o.reserved -= amount + fee
        lender.reserved[asset] -= amount + fee
        borrower.available[asset] += amount
        fee_account.available[asset] += fee
        book = market.book
        left = o.remaining - lots
        if left:
            book.reduce(o, left)
        else:
            book.remove(o)
            log_append((_restore_remaining, o, o.remaining))
            o.remaining = 0
            engine._detach(o)
            self.release(market, o)  # a fully taken offer keeps only fee rounding slack
        engine._dirty.add(o)
        trade_id = engine._next_trade_id
        engine._next_trade_id = trade_id + 1
        fill = Fill(trade_id, market.id, o.price, amount, Side.BUY, o.id, lender.address, left * lot, fee,
                    0, borrower.address, 0, 0)
        events.append(fill)
        if engine._fills_kept:
            engine._remember_fill(lender, fill)
            engine._remember_fill(borrower, fill)
        return self._open_loan(market, lender, borrower, amount, o.price, now, events, rolled_from).id

    def _pay(self, loan: Loan, amount: int, now: int, events: list, at_maturity: bool) -> tuple[int, int]:
        """Move ``amount`` (<= what is owed, <= the borrower's free balance)
        from a touched loan's borrower to its lender: interest first, then
        principal. Closes the loan when nothing is owed. Returns (interest,
        principal) paid."""
        engine = self.engine
        borrower, lender, asset = loan.borrower, loan.lender, loan.asset
        to_interest = min(amount, loan.interest_due)
        to_principal = amount - to_interest
        if amount:
            engine._move_free(borrower, lender, asset, amount)
        asset_id = self.asset_ids[asset]
        if to_interest:
            loan.interest_due -= to_interest
            loan.interest_paid += to_interest
            events.append(InterestPaid(loan.id, lender.address, borrower.address, asset_id, to_interest))
        if to_principal:
            self._set_principal(loan, loan.principal - to_principal, now)
        if to_principal or (at_maturity and not loan.principal and not loan.interest_due):
            events.append(LoanRepaid(loan.id, lender.address, borrower.address, asset_id, to_principal,
                                     loan.principal, at_maturity))
        if not loan.principal and not loan.interest_due:
            self._set_state(loan, False, loan.overdue)
        return to_interest, to_principal

    # ==== commands ========================================================

    def repay(self, c: RepayLoan, ctx):
        """RepayLoan: the borrower pays up to ``amount`` of a loan now
        (interest first, then principal; more than is owed pays it all)."""
        engine = self.engine
        account = engine._accounts.get(c.account)
        loan = self.loans.get(c.loan_id)
        if loan is None or account is None or loan.borrower is not account:
            raise ExchangeError(Reason.UNKNOWN_LOAN)
        amount = c.amount
        if amount.__class__ is not int or amount <= 0:
            raise ExchangeError(Reason.INVALID_AMOUNT)
        now = ctx.timestamp
        pay = min(amount, loan.owed(now))
        if account.available[loan.asset] < pay:
            raise ExchangeError(Reason.INSUFFICIENT_BALANCE)
        events: list = []
        self._touch(loan, now)
        paid_interest, paid_principal = self._pay(loan, pay, now, events, at_maturity=False)
        return RepayResult(loan.id, paid_interest, paid_principal, loan.principal, loan.interest_due), events

    def take_over(self, loan: Loan, new_lender, now: int, events: list, quote: int | None = None) -> int:
        """``new_lender`` (an Account: the insurance fund) buys ``loan``'s claim
        from its lender at face value - principal + interest due at ``now`` -
        and is its lender from then on (future interest and repayment go to
        it). It pays from its free balance, which may go below zero: in the
        quote at the oracle price (floor) when the loan's asset has one and
        ``quote`` (an asset index) is given, else in the loan's asset (a
        liquidation must not need a book deep enough to sell the asset it
        was paid in; found by review). A claim on ``new_lender`` itself is
        repaid instead (a loan must not lend to its own borrower). Returns the
        claim. For a liquidation: a claim with a term cannot be sold on a
        book, so the fund takes it and the account's creditors are paid from
        its value (liquidation.py)."""
        engine = self.engine
        self._touch(loan, now)
        old = loan.lender
        claim = loan.principal + loan.interest_due
        if loan.borrower is new_lender:
            self._pay(loan, claim, now, events, at_maturity=False)
            return claim
        # The lender changes with the loan's index entries around it, and its undo
        # does the same in whatever state the loan is then (a later action of the
        # same epoch may have closed it without a new undo entry; found by review).
        engine._log.append((self._restore_lender, loan, old))
        self._unindex(loan)
        loan.lender = new_lender
        self._index(loan)
        old.loans_snap = new_lender.loans_snap = engine._epoch  # (caches keyed by it)
        engine._dirty.add(loan)
        price = self.engine._perps.oracle.prices[loan.asset] if quote is not None else 0
        if price and loan.asset != quote:
            paid_asset = quote
            paid = claim * price // 10 ** self.engine._perps.decimals[loan.asset]
        else:
            paid_asset, paid = loan.asset, claim
        engine._move_free(new_lender, old, paid_asset, paid)
        events.append(ClaimTakenOver(loan.id, old.address, loan.borrower.address, self.asset_ids[loan.asset],
                                     new_lender.address, claim))
        return claim

    def _restore_lender(self, loan: Loan, old) -> None:
        self._unindex(loan)
        loan.lender = old
        self._index(loan)

    def share_default(self, account, asset: int, shortfall: int, now: int, events: list | None = None) -> int:
        """Cut the claims of the lenders of ``account``'s open loans in
        ``asset`` (index) by ``shortfall`` in total, pro rata to each claim
        (principal + interest due at ``now``): floor, then one unit each to the
        largest remainders (ties: lower loan id). Interest is cut before
        principal. Appends one ``DefaultShared`` per loan cut; returns the
        total cut (less than ``shortfall`` only if the claims are smaller).

        Phase 2's default handling calls it inside a command, after it has
        turned the account's negative balances into loans ("debt converted to
        loans, the loss shared pro rata by its creditors"). It starts a fresh
        journal epoch, so it is also safe between commands.
        """
        engine = self.engine
        if isinstance(account, bytes):
            account = engine._accounts[account]
        engine._epoch += 1  # fresh snapshots: callable between commands too
        if events is None:
            events = []
        loans = [account.loans[i] for i in sorted(account.loans)
                 if account.loans[i].borrower is account and account.loans[i].asset == asset]
        if shortfall <= 0 or not loans:
            return 0
        for loan in loans:
            self._touch(loan, now)
        claims = [loan.principal + loan.interest_due for loan in loans]
        total = sum(claims)
        cut_total = min(shortfall, total)
        cuts = [cut_total * claim // total for claim in claims]
        left = cut_total - sum(cuts)
        # The flooring leaves fewer units than loans; each goes to a largest remainder.
        order = sorted(range(len(loans)), key=lambda i: (-(cut_total * claims[i] % total), loans[i].id))
        for i in order[:left]:
            cuts[i] += 1
        asset_id = self.asset_ids[asset]
        for loan, cut in zip(loans, cuts):
            if not cut:
                continue
            from_interest = min(cut, loan.interest_due)
            loan.interest_due -= from_interest
            if cut > from_interest:
                self._set_principal(loan, loan.principal - (cut - from_interest), now)
            events.append(DefaultShared(loan.id, loan.lender.address, account.address, asset_id, cut,
                                        loan.principal + loan.interest_due))
            if not loan.principal and not loan.interest_due:
                self._set_state(loan, False, loan.overdue)
        return cut_total

    # ==== views ===========================================================

    def loan_views(self, account, now: int) -> list["LoanView"]:
        """The account's open loans, lent and borrowed, by id, as of ``now``."""
        a = self._account(account)
        if a is None:
            return []
        return [self._view(a.loans[i], now) for i in sorted(a.loans)]

    def loan_view(self, loan_id: int, now: int) -> "LoanView | None":
        loan = self.loans.get(loan_id)
        return self._view(loan, now) if loan is not None else None

    def _view(self, loan: Loan, now: int) -> "LoanView":
        return LoanView(loan.id, loan.market, self.asset_ids[loan.asset], loan.lender.address,
                        loan.borrower.address, loan.principal, loan.rate, loan.start, loan.maturity,
                        loan.interest_due + loan.pending(now), loan.interest_to_term(now), loan.interest_paid,
                        loan.overdue)

    def portfolio_terms(self, account, now: int) -> tuple[list, list]:
        """The risk model's ``lent`` and ``borrowed`` lists for ``account``
        (Account or address), per asset index, sorted:
        lent [(asset, principal + interest due now)],
        borrowed [(asset, principal + interest due now, interest still to accrue to maturity)]."""
        a = self._account(account)
        if a is None:
            return [], []
        return self._terms(a, now, self.asset_indexes)

    def terms_by_id(self, account, now: int) -> tuple[list, list]:
        """``portfolio_terms`` of an Account keyed by asset id (perps.portfolio_of,
        once per pre-trade check and per re-banding).

        Cached per account for one block time: an entry made at epoch ``c``
        holds while ``now`` is the same, the account has as many loans, and
        its ``loans_snap`` is older than ``c``. That is exact because every
        change to a loan's fields is preceded, in the same command, by its
        snapshot (``_touch``; a new loan is made with ``snap`` = the epoch),
        which stamps both parties' ``loans_snap`` with the epoch, and epochs
        only grow: a loan changed or added since the entry was made leaves a
        stamp of ``c`` or later, and a loan removed without any other change
        shortens ``loans``. An undo restores fields without touching the
        stamps, so ``Engine.revert`` clears the cache. O(1) per hit, whatever
        the number of loans. (tests/exchange/test_fast_checks.py compares it
        with ``_terms`` on random streams with reverts.) The lists returned
        are the cached ones: callers must not mutate them (a Portfolio that
        changes its terms replaces the list, as ``_check_borrow`` does)."""
        loans = account.loans
        cache = self._terms_cache
        hit = cache.get(account)
        if hit is not None and hit[0] == now and hit[2] == len(loans) and account.loans_snap < hit[1]:
            return hit[3], hit[4]
        lent, borrowed = self._terms(account, now, self.asset_ids)
        cache[account] = (now, self.engine._epoch, len(loans), lent, borrowed)
        return lent, borrowed

    def margin_terms(self, account, now: int) -> tuple[list, list]:
        """``terms_by_id`` in the form that only available-margin figures may
        read (the pre-trade checks and the re-banding; not equity, not views).

        A borrowing of the risk model's quote asset that is neither overdue
        nor past maturity counts in every available-margin figure only as
        ``owed now + interest to term`` (risk.py: ``equity -= owed``,
        ``deductions += interest``, no price, no exposure), and that sum does
        not depend on the time: ``principal + interest_due - accrued +
        ceil(principal * rate * (maturity - accrual_start) / D)``. Such loans
        are summed once into ``(quote, sum, 0)``, valid until the earliest of
        their maturities; the other loans (lent, other assets, overdue) are
        computed at ``now`` as ``_terms`` does. The split is cached per
        account as ``terms_by_id``'s entries are (epoch, number of loans,
        ``loans_snap``; ``Engine.revert`` clears it), so a new block time
        recomputes only the few loans that accrue, not all of them.
        tests/exchange/test_fast_checks.py compares every available figure
        with the full terms on random streams with reverts."""
        loans = account.loans
        hit = self._fixed_cache.get(account)
        if hit is None or now >= hit[0] or hit[2] != len(loans) or account.loans_snap >= hit[1]:
            hit = self._split(account, now)
        variable = hit[4]
        if not variable:
            return _NO_TERMS, hit[3]
        if hit[5] != now:
            hit[5] = now
            asset = hit[9]
            if asset is None:
                hit[6], hit[7] = self._terms(account, now, self.asset_ids, variable, hit[8])
            else:
                # Every variable loan is lent by the account, in one asset (a lender's
                # usual case): _terms' lent sum without its dicts (the same sum; its
                # borrowed list is the fixed part alone, which hit[3] already is).
                divisor = INTEREST_DIVISOR
                owed = 0
                for loan in variable:
                    principal, start = loan.principal, loan.accrual_start
                    owed += principal + loan.interest_due - loan.accrued
                    if now > start:
                        owed -= -principal * loan.rate * (now - start) // divisor
                hit[6] = [(self.asset_ids[asset], owed)]
                hit[7] = hit[3]
        return hit[6], hit[7]

    def _split(self, account, now: int) -> list:
        """margin_terms' cache entry: [valid before, epoch, number of loans,
        fixed borrowed list, variable loans, their terms' time, lent, borrowed,
        fixed sum, the asset index of the variable loans if every one is lent
        by the account and all are in that asset (else None)]."""
        q = self._quote
        if q is None:
            engine = self.engine
            q = self._quote = engine._asset_index[engine._perps.risk_model().quote]
        divisor = INTEREST_DIVISOR
        fixed = 0
        until = None
        variable = []
        for loan in account.loans.values():  # sums commute; the variable list keeps dict order, as _terms reads it
            maturity = loan.maturity
            if loan.borrower is account and loan.asset == q and not loan.overdue and now < maturity:
                principal = loan.principal
                fixed += (principal + loan.interest_due - loan.accrued
                          - (-principal * loan.rate * (maturity - loan.accrual_start) // divisor))
                if until is None or maturity < until:
                    until = maturity
            else:
                variable.append(loan)
        if until is None:
            until = _NEVER
            listed = _NO_TERMS
        else:
            listed = [(self.asset_ids[q], fixed, 0)]
        lent_in = variable[0].asset if variable else None
        for loan in variable:
            if loan.lender is not account or loan.asset != lent_in:
                lent_in = None
                break
        hit = [until, self.engine._epoch, len(account.loans), listed, variable, None, None, None,
               fixed if listed else None, lent_in]
        self._fixed_cache[account] = hit
        return hit

    def _terms(self, a, now: int, keys: list, loans=None, fixed=None) -> tuple[list, list]:
        """The lent and borrowed lists of ``a``'s loans (``loans``: those
        only), plus ``fixed`` owed with nothing to term in the quote asset."""
        lent: dict = {}
        borrowed: dict = {} if fixed is None else {self._quote: (fixed, 0)}
        # Loan.owed and Loan.interest_to_term, inlined (every pre-trade check
        # of a borrower runs this, once per loan); sums commute, so dict order
        # does not reach the output.
        divisor = INTEREST_DIVISOR
        for loan in a.loans.values() if loans is None else loans:
            principal, rate, start = loan.principal, loan.rate, loan.accrual_start
            accrued_now = -(-principal * rate * (now - start) // divisor) if now > start else 0
            owed = principal + loan.interest_due + accrued_now - loan.accrued
            asset = loan.asset
            if loan.lender is a:
                lent[asset] = lent.get(asset, 0) + owed
            else:
                maturity = loan.maturity
                to_term = (0 if loan.overdue or now >= maturity
                           else -(-principal * rate * (maturity - start) // divisor) - accrued_now)
                was = borrowed.get(asset)
                borrowed[asset] = (owed, to_term) if was is None else (was[0] + owed, was[1] + to_term)
        return ([(keys[k], lent[k]) for k in sorted(lent)],
                [(keys[k], *borrowed[k]) for k in sorted(borrowed)])

    def has_debt(self, account) -> bool:
        """Whether the account borrows (a withdrawal must then pass the margin
        check; an account that only lends owes nothing)."""
        return any(loan.borrower is account for loan in account.loans.values())

    def overdue_loans(self) -> list[int]:
        """Ids of overdue loans (for phase 2's default handling)."""
        return list(self.overdue)

    def _account(self, account):
        if isinstance(account, bytes):
            return self.engine._accounts.get(account)
        return account

    # ==== persistence and audit ===========================================

    def state(self):
        loans = [(loan.id, loan.market, loan.asset, loan.lender.address, loan.borrower.address, loan.rate,
                  loan.start, loan.maturity, *loan.fields()[:-1])
                 for loan in (self.loans[i] for i in sorted(self.loans))]
        return (self.ledger.next_loan_id, loans)

    def load_state(self, state) -> None:
        next_loan_id, loans = state
        engine = self.engine
        self.ledger.next_loan_id = next_loan_id
        engine._dirty.add(self.ledger)
        accounts = engine._accounts
        for (loan_id, market, asset, lender, borrower, rate, start, maturity, principal, accrual_start, accrued,
             interest_due, interest_paid, overdue) in loans:
            loan = Loan(loan_id, market, asset, accounts[lender], accounts[borrower], principal, rate, start,
                        maturity)
            loan.accrual_start, loan.accrued = accrual_start, accrued
            loan.interest_due, loan.interest_paid, loan.overdue = interest_due, interest_paid, overdue
            loan.open = True
            self._index(loan)
            engine._dirty.add(loan)

    def audit(self) -> list[str]:
        """Index invariants of the loan ledger; [] when all hold."""
        problems = []
        expected_due = sorted((loan.maturity, loan.id) for loan in self.loans.values() if not loan.overdue)
        if list(self.by_maturity) != expected_due:
            problems.append("maturity index disagrees with the open loans")
        if list(self.overdue) != sorted(i for i, loan in self.loans.items() if loan.overdue):
            problems.append("overdue index disagrees with the open loans")
        for a in self.engine._accounts.values():
            for i, loan in a.loans.items():
                if self.loans.get(i) is not loan or a not in (loan.lender, loan.borrower):
                    problems.append(f"loan {i} badly indexed under {a.address.hex()}")
        for loan in self.loans.values():
            if loan.principal < 0 or loan.interest_due < 0 or (not loan.principal and not loan.interest_due):
                problems.append(f"loan {loan.id} open with bad amounts")
            if loan.lender.loans.get(loan.id) is not loan or loan.borrower.loans.get(loan.id) is not loan:
                problems.append(f"loan {loan.id} missing from an account")
        return problems


def _restore_next_loan_id(ledger: LoanLedger, value: int) -> None:
    ledger.next_loan_id = value


def _restore_remaining(o: Order, remaining: int) -> None:
    o.remaining = remaining


@dataclass(slots=True, frozen=True)
class LoanView:
    loan_id: int
    market: int
    asset: int  # asset id
    lender: bytes
    borrower: bytes
    principal: int  # asset units still lent
    rate: int  # RATE_SCALE parts a year
    start: int  # block time
    maturity: int  # block time
    interest_due: int  # accrued up to the view's time and not yet paid
    interest_to_term: int  # still to accrue on the current principal until maturity
    interest_paid: int  # paid so far
    overdue: bool
