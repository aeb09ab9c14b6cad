"""Order-flow workloads of `blixt stress`: `orders` (Blixt's exchange precompile) and
`orderbook-sol` (a Solidity order book, bench/contracts/OrderBook.sol, on any EVM node).

Both send the same market-making flow on ETH-USDC (`MarketMakingFlow`): per sender,
cycles of ten transactions around a fixed mid (3000 USDC = price 3_000_000, tick 10,
lot 10**15 = 0.001 WETH)::

    step  0,1  near bid, near ask    placeLimit, GTC, 1–5 ticks from the mid   (rest)
          2,3  deep bid, deep ask    placeOrder GTC with a client order id,
                                     20–27 ticks from the mid                  (rest)
          4    crossing buy          placeOrder IOC at mid + 5 ticks           (fills)
          5,6  near bid, near ask    like 0,1                                  (rest)
          7    crossing sell         placeOrder IOC at mid − 5 ticks           (fills)
          8,9  cancel the deep bid / ask of steps 2,3 by client order id

60 % resting orders, 20 % crossing orders, 20 % cancels. Crossing orders reach only
the near levels and the cancels target only deep orders (which nothing can fill),
so on a correct book every transaction succeeds; a reverted receipt is a finding.
Client order ids are the transaction's nonce + 1, known at signing time and unique
per account for the life of the chain (reruns with the same seed never collide).

Setup (not measured): probe the node (the precompile must answer `bestBidAsk(0)`;
otherwise `WorkloadUnavailable`), fund each sender with the ETH its WETH deposit
needs, then per sender `deposit(1, weth)` with msg.value and `deposit(0, usdc)`
from the devnet faucet (a sender reused from an earlier run first sends
`cancelAll(0)`, so its open orders stay bounded), in batches through
`context.send_and_wait`. Calldata for the precompile is built from the published
ABI (precompiles/IExchange.abi.json): options this module does not name are encoded
as zero, so it keeps working when placeOrder grows options.

Every included receipt is checked after the run (`receipt_outcomes = "orders"`):
the summary reports orders accepted (status 1) and reverted (status 0).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import sha3

from node.stress.rpc import RpcError
from node.stress.setup import SetupError
from node.stress.workloads import Workload, WorkloadUnavailable, register_workload

# Same as precompiles.exchange.EXCHANGE_ADDRESS (a test keeps them equal); not
# imported, so the stress tool does not load the engine to talk to another node.
EXCHANGE_ADDRESS = bytes.fromhex("0000000000000000000000000000000000000800")
ABI_PATH = Path(__file__).resolve().with_name("IExchange.abi.json")
ORDERBOOK_ARTIFACT = Path(__file__).resolve().parent.parent / "bench" / "contracts" / "orderbook.json"

MARKET = 0  # ETH-USDC on Blixt's default config
USDC, WETH = 0, 1  # asset ids (the Solidity book uses the same: QUOTE 0, BASE 1)
BUY, SELL = 0, 1
GTC, IOC = 0, 1
CANCEL_INCOMING = 1  # self-trade prevention: placeLimit's default, said explicitly
_SETUP_CHUNK = 300  # setup transactions per send_and_wait call


def keccak(data: bytes) -> bytes:
    return sha3.keccak_256(data).digest()


# -- the flow ---------------------------------------------------------------------

REST, CROSS, CANCEL = "rest", "cross", "cancel"


@dataclass(frozen=True, slots=True)
class Action:
    """One transaction of the flow. `client_order_id`: the order's own id (rest),
    or the id of the order to cancel (cancel); 0 = none."""

    kind: str
    side: int = 0
    price: int = 0
    quantity: int = 0
    time_in_force: int = GTC
    client_order_id: int = 0


class MarketMakingFlow:
    """The order flow, a pure function of (sender, sequence, first nonce): no
    randomness, so a run is reproducible and the setup can total what it needs."""

    CYCLE = 10
    NEAR_TICKS = 5  # near levels: 1..5 ticks from the mid
    DEEP_FROM, DEEP_LEVELS = 20, 8  # deep levels: 20..27 ticks, beyond any crossing order

    def __init__(self, mid: int = 3_000_000, tick: int = 10, lot: int = 10**15) -> None:
        self.mid, self.tick, self.lot = mid, tick, lot

    def action(self, sender: int, sequence: int, first_nonce: int) -> Action:
        step = sequence % self.CYCLE
        mix = _mix(sender, sequence)
        mid, tick, lot = self.mid, self.tick, self.lot
        if step in (0, 1, 5, 6):
            side = BUY if step in (0, 5) else SELL
            offset = tick * (1 + mix % self.NEAR_TICKS)
            return Action(REST, side, mid - offset if side == BUY else mid + offset, lot * (1 + (mix >> 8) % 4))
        if step in (2, 3):
            side = BUY if step == 2 else SELL
            offset = tick * (self.DEEP_FROM + mix % self.DEEP_LEVELS)
            return Action(REST, side, mid - offset if side == BUY else mid + offset, lot * (1 + (mix >> 8) % 2),
                          GTC, first_nonce + sequence + 1)
        if step in (4, 7):
            side = BUY if step == 4 else SELL
            reach = tick * self.NEAR_TICKS
            return Action(CROSS, side, mid + reach if side == BUY else mid - reach, lot * (1 + (mix >> 8) % 3), IOC)
        # 8 cancels the order of step 2 of this cycle, 9 that of step 3.
        return Action(CANCEL, client_order_id=first_nonce + sequence - 6 + 1)

    def needs(self, sender: int, count: int) -> tuple[int, int]:
        """(WETH wei, USDC units) that `count` transactions of `sender` can hold at
        most: every sell's quantity, every buy's notional at its limit price + 1 %
        (fees are at most 0.05 %), as if nothing were ever released."""
        weth = usdc = 0
        for sequence in range(count):
            a = self.action(sender, sequence, 0)
            if a.kind == CANCEL:
                continue
            if a.side == SELL:
                weth += a.quantity
            else:
                usdc += a.price * a.quantity // self.lot
        return weth, usdc + usdc // 100 + 1_000_000


def _mix(sender: int, sequence: int) -> int:
    # A cheap integer hash (Knuth's multiplicative constant): spreads prices and
    # sizes over senders and steps without a random generator.
    return ((sender * 40_503 + sequence * 2_654_435_761) & 0xFFFFFFFF) >> 7


# -- calldata from a published ABI -------------------------------------------------

class AbiFunction:
    """A function of a JSON ABI with static inputs only. `encode(**values)` puts each
    named value in its slot and zero in the slots not named (new options of the
    function keep their zero default); a name the function lacks is an error."""

    def __init__(self, entry: dict) -> None:
        self.name = entry["name"]
        self.inputs = [(i["name"], i["type"]) for i in entry["inputs"]]
        self.signature = f"{self.name}({','.join(t for _, t in self.inputs)})"
        self.selector = keccak(self.signature.encode())[:4]
        for name, kind in self.inputs:
            if not _is_static_word(kind):
                raise ValueError(f"{self.signature}: input {name} ({kind}) is not a static word type")
        self._names = {name for name, _ in self.inputs}

    def encode(self, **values: int | bytes) -> bytes:
        unknown = values.keys() - self._names
        if unknown:
            raise ValueError(f"{self.signature} has no input named {sorted(unknown)}")
        words = [self.selector]
        for name, kind in self.inputs:
            value = values.get(name, 0)
            value = int.from_bytes(value, "big") if isinstance(value, bytes) else int(value)
            if kind.startswith("int"):
                value %= 1 << 256
            words.append(value.to_bytes(32, "big"))
        return b"".join(words)


def _is_static_word(kind: str) -> bool:
    return kind in ("bool", "address") or (kind.startswith(("uint", "int", "bytes")) and kind[-1].isdigit())


def load_abi(source: Path | list) -> dict[str, AbiFunction]:
    entries = json.loads(source.read_text()) if isinstance(source, Path) else source
    functions = {}
    for entry in entries:
        if entry.get("type") != "function":
            continue
        try:
            functions[entry["name"]] = AbiFunction(entry)
        except ValueError:
            continue  # e.g. batch(bytes[]): not used here
    return functions


# -- the workloads ----------------------------------------------------------------

class _OrderFlowWorkload(Workload):
    """What both workloads share: the flow, the balances it needs, the deposits."""

    receipt_outcomes = "orders"
    target = b""

    def __init__(self) -> None:
        self.flow = MarketMakingFlow()
        self.first_nonce: list[int] = []

    # calldata of one action and of the deposits: per venue
    def encode(self, action: Action) -> bytes:
        raise NotImplementedError

    def deposit(self, asset: int, amount: int) -> bytes:
        raise NotImplementedError

    def cleanup(self) -> bytes | None:
        """Calldata a reused sender sends before its deposits (None: nothing)."""
        return None

    def transaction(self, sender, sequence, senders):
        return self.target, 0, self.encode(self.flow.action(sender, sequence, self.first_nonce[sender]))

    async def fund_and_deposit(self, context, setup_gas: int) -> dict:
        """Fund each sender with the ETH its WETH deposit needs, then deposit WETH
        (msg.value) and USDC (faucet) on the venue; record each sender's first load
        nonce (client order ids derive from it)."""
        rpc, senders, counts = context.rpc, context.senders, context.transactions_per_sender
        nonces = await _batch(rpc, [("eth_getTransactionCount", [s.address_hex, "pending"]) for s in senders])
        balances = await _batch(rpc, [("eth_getBalance", [s.address_hex, "latest"]) for s in senders])
        needs = [self.flow.needs(i, count) if count else (0, 0) for i, count in enumerate(counts)]
        gas_money = 3 * setup_gas * context.fees.max_fee_per_gas
        funding, deposits = [], []
        self.first_nonce = []
        for i, (sender, count) in enumerate(zip(senders, counts)):
            nonce = int(nonces[i], 16)
            weth, usdc = needs[i]
            sent = 0
            if count:
                if int(balances[i], 16) < weth + gas_money:
                    funder = context.dev_accounts[i % len(context.dev_accounts)]
                    funding.append((funder, sender.address, weth + 2 * gas_money, b"", 21_000))
                cleanup = self.cleanup()
                if nonce and cleanup is not None:
                    deposits.append((sender, self.target, 0, cleanup, setup_gas))
                    sent += 1
                deposits.append((sender, self.target, weth, self.deposit(WETH, weth), setup_gas))
                deposits.append((sender, self.target, 0, self.deposit(USDC, usdc), setup_gas))
                sent += 2
            self.first_nonce.append(nonce + sent)
        for chunk in _chunks(funding, _SETUP_CHUNK):
            await context.send_and_wait(chunk)
        for chunk in _chunks(deposits, _SETUP_CHUNK):
            await context.send_and_wait(chunk)
        return {
            "flow": "market making on ETH-USDC around 3000: 60% resting, 20% crossing IOC, 20% cancels by client id",
            "deposited_weth_wei": sum(w for w, _ in needs),
            "deposited_usdc_units": sum(u for _, u in needs),
        }


@register_workload
class ExchangeOrders(_OrderFlowWorkload):
    name = "orders"
    description = ("market-making order flow (rest / cross / cancel by client id) on Blixt's "
                   "exchange precompile at 0x…0800, ETH-USDC")
    # placeOrder costs ~30k gas (docs/precompile.md); a crossing order that fills
    # two makers ~35k. Generous: the limit is not charged, only what is used.
    gas_per_transaction = 100_000

    def __init__(self) -> None:
        super().__init__()
        self.target = EXCHANGE_ADDRESS
        self.functions = load_abi(ABI_PATH)
        f = self.functions
        self._place_limit, self._place_order = f["placeLimit"], f["placeOrder"]
        self._cancel_by_client_id, self._deposit, self._cancel_all = f["cancelByClientId"], f["deposit"], f["cancelAll"]

    def encode(self, a: Action) -> bytes:
        if a.kind == CANCEL:
            return self._cancel_by_client_id.encode(clientOrderId=a.client_order_id)
        if a.kind == REST and not a.client_order_id:
            return self._place_limit.encode(market=MARKET, side=a.side, price=a.price, quantity=a.quantity)
        return self._place_order.encode(market=MARKET, side=a.side, price=a.price, quantity=a.quantity,
                                        timeInForce=a.time_in_force, clientOrderId=a.client_order_id,
                                        stp=CANCEL_INCOMING)

    def deposit(self, asset, amount):
        return self._deposit.encode(asset=asset, amount=amount)

    def cleanup(self):
        return self._cancel_all.encode(market=MARKET)

    async def setup(self, context):
        await probe_exchange(context.rpc)
        context.notes["orders"] = await self.fund_and_deposit(context, 100_000)


@register_workload
class SolidityOrderBook(_OrderFlowWorkload):
    name = "orderbook-sol"
    description = ("the same order flow on a Solidity limit order book (bench/contracts/OrderBook.sol), "
                   "deployed fresh: runs on any EVM node")
    # Measured on anvil (4,000 of this flow): placeLimit 94–128k gas, placeOrder
    # (deep rest with a client id, or a crossing IOC) 55–165k, cancel 43–47k.
    gas_per_transaction = 300_000

    def __init__(self) -> None:
        super().__init__()
        self.artifact = None
        if ORDERBOOK_ARTIFACT.is_file():
            self.artifact = json.loads(ORDERBOOK_ARTIFACT.read_text())
            ids = {sig.split("(")[0]: bytes.fromhex(sel) for sig, sel in self.artifact["methodIdentifiers"].items()}
            self._selectors = ids

    def _call(self, name: str, *words: int) -> bytes:
        return self._selectors[name] + b"".join(w.to_bytes(32, "big") for w in words)

    def encode(self, a: Action) -> bytes:
        if a.kind == CANCEL:
            return self._call("cancelByClientId", a.client_order_id)
        if a.kind == REST and not a.client_order_id:
            return self._call("placeLimit", a.side, a.price, a.quantity)
        return self._call("placeOrder", a.side, a.price, a.quantity, a.time_in_force, a.client_order_id)

    def deposit(self, asset, amount):
        return self._call("deposit", asset, amount)

    async def setup(self, context):
        if self.artifact is None:
            raise WorkloadUnavailable(f"the orderbook-sol workload needs {ORDERBOOK_ARTIFACT} (bench/contracts/build.js)")
        flow = self.flow
        code = bytes.fromhex(self.artifact["bytecode"][2:]) + flow.lot.to_bytes(32, "big") + flow.tick.to_bytes(32, "big")
        (receipt,) = await context.send_and_wait([(context.dev_accounts[0], b"", 0, code, 5_000_000)])
        self.target = bytes.fromhex(receipt["contractAddress"][2:])
        notes = await self.fund_and_deposit(context, 100_000)
        context.notes["orderbook_sol"] = {"contract": receipt["contractAddress"], **notes}


async def probe_exchange(rpc) -> None:
    """Raise WorkloadUnavailable unless the node has the exchange precompile: code at
    0x…0800 and an answer to bestBidAsk(0)."""
    address = "0x" + EXCHANGE_ADDRESS.hex()
    missing = ("the `orders` workload needs Blixt's exchange precompile at 0x…0800, "
               "which this node does not have")
    code = await rpc.call("eth_getCode", [address, "latest"])
    if not isinstance(code, str) or not code.removeprefix("0x").strip("0"):
        raise WorkloadUnavailable(f"{missing} (eth_getCode({address}) is empty); "
                                  "use -w orderbook-sol for a Solidity order book on any EVM node")
    data = "0x" + keccak(b"bestBidAsk(uint256)")[:4].hex() + "00" * 32
    try:
        answer = await rpc.call("eth_call", [{"to": address, "data": data}, "latest"])
    except RpcError as exc:
        raise WorkloadUnavailable(f"{missing} (bestBidAsk(0) failed: {exc.message})") from exc
    if not isinstance(answer, str) or len(answer) != 2 + 128:
        raise WorkloadUnavailable(f"{missing} (bestBidAsk(0) answered {answer!r})")


async def _batch(rpc, calls: list) -> list:
    out = []
    for chunk in _chunks(calls, 200):
        for result in await rpc.batch(chunk):
            if isinstance(result, RpcError):
                raise SetupError(f"setup query failed: {result.message}")
            out.append(result)
    return out


def _chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]
