"""The exchange precompile: one semantics through the fast path and through py-evm,
reverts that leave no trace in the engine, and the published interface.

Calldata is built from the published IExchange.abi.json (what a client uses), not
from the precompile's own tables.
"""
from __future__ import annotations

import json
from pathlib import Path

import coincurve
import pytest
from eth_abi import decode, encode
from eth_account import Account
from eth_utils import to_checksum_address
from hypothesis import given, settings, strategies as st

from exchange import Engine, load
from node.chain.execution import BlockEnv, Executor, TxInvalid, contract_address
from node.chain.state import FlatState
from node.chain.transactions import decode_raw_transaction, keccak
from node.node import default_exchange_table
from precompiles import solidity
from precompiles.exchange import DIGEST_SLOT, EXCHANGE_ADDRESS, EXCHANGE_CODE, ExchangeRuntime

CHAIN_ID = 31337
KEYS = [bytes([i + 1]) * 32 for i in range(3)]
SENDERS = [keccak(coincurve.PrivateKey(k).public_key.format(compressed=False)[1:])[12:] for k in KEYS]
ABI = json.loads(Path(solidity.ABI_PATH).read_text())
FUNCTIONS = {e["name"]: e for e in ABI if e["type"] == "function"}
EVENTS = {keccak(f"{e['name']}({','.join(i['type'] for i in e['inputs'])})".encode()): e
          for e in ABI if e["type"] == "event"}
ARTIFACTS = json.loads((Path(__file__).resolve().parents[1] / "contracts" / "artifacts.json").read_text())
WETH, USDC = 1, 0
ETH_USDC = 0
PRICE = 3_000_000  # 3000 USDC per WETH, per lot of 0.001 WETH
LOT = 10**15


def calldata(name: str, *args) -> bytes:
    f = FUNCTIONS[name]
    types = [i["type"] for i in f["inputs"]]
    return keccak(f"{name}({','.join(types)})".encode())[:4] + encode(types, list(args))


def place(market, side, price, quantity, tif=0):
    """placeOrder with every option the test does not name at its zero default (the
    published ABI decides which options exist)."""
    named = {"market": market, "side": side, "price": price, "quantity": quantity, "timeInForce": tif}
    inputs = FUNCTIONS["placeOrder"]["inputs"]
    return calldata("placeOrder", *[named.get(i["name"], False if i["type"] == "bool" else 0) for i in inputs])


def decode_error(output: bytes) -> tuple[int, str]:
    assert output[:4] == keccak(b"ExchangeError(uint32,string)")[:4], output.hex()
    return decode(["uint32", "string"], output[4:])


class Harness:
    """A head state with the exchange, executing signed transactions one by one."""

    def __init__(self, fast: bool) -> None:
        state = FlatState()
        for address in SENDERS:
            state.set_balance(address, 10**24)
        state.set_nonce(EXCHANGE_ADDRESS, 1)
        state.set_code(EXCHANGE_ADDRESS, EXCHANGE_CODE)
        self.runtime = ExchangeRuntime(Engine(load(default_exchange_table())), native_asset=WETH)
        state.exchange = self.runtime
        state.take_changes()
        self.state = state
        self.env = BlockEnv(number=1, timestamp=1_700_000_000, base_fee=10**9, gas_limit=10**9,
                            coinbase=b"\xc0" * 20, mix_hash=b"\x00" * 32, prev_hashes=[b"\x11" * 32],
                            chain_id=CHAIN_ID)
        self.executor = Executor(state, self.env, fast_paths=fast)
        self.nonces = [0] * len(KEYS)
        self.gas = 0

    def send(self, sender: int, to: bytes, data: bytes, value: int = 0, gas: int = 300_000):
        tx = {"chainId": CHAIN_ID, "nonce": self.nonces[sender], "to": to_checksum_address(to),
              "value": value, "gas": gas, "maxFeePerGas": 3 * 10**9, "maxPriorityFeePerGas": 10**9,
              "data": data, "type": 2}
        raw = bytes(Account.sign_transaction(tx, KEYS[sender]).raw_transaction)
        receipt = self.executor.execute(decode_raw_transaction(raw, CHAIN_ID), self.gas)
        self.nonces[sender] += 1
        self.gas = receipt.cumulative_gas_used
        return receipt

    def deploy(self, sender: int, name: str) -> bytes:
        tx = {"chainId": CHAIN_ID, "nonce": self.nonces[sender], "value": 0, "gas": 3_000_000,
              "gasPrice": 3 * 10**9, "data": ARTIFACTS[name]["bytecode"]}
        raw = bytes(Account.sign_transaction(tx, KEYS[sender]).raw_transaction)
        receipt = self.executor.execute(decode_raw_transaction(raw, CHAIN_ID), self.gas)
        assert receipt.status == 1, receipt.error
        self.nonces[sender] += 1
        return contract_address(SENDERS[sender], self.nonces[sender] - 1)

    def digest(self) -> bytes:
        return self.runtime.digest()


def contract_call(name: str, fn: str, *args) -> bytes:
    entry = next(e for e in ARTIFACTS[name]["abi"] if e.get("name") == fn)
    types = [i["type"] for i in entry["inputs"]]
    return keccak(f"{fn}({','.join(types)})".encode())[:4] + encode(types, list(args))


# -- the published interface ------------------------------------------------------------

def test_interface_files_are_generated_from_the_engine():
    assert solidity.main(["--check"]) == 0


def test_every_function_of_the_interface_is_answered():
    h = Harness(fast=True)
    for name in FUNCTIONS:
        inputs = [i["type"] for i in FUNCTIONS[name]["inputs"]]
        data = keccak(f"{name}({','.join(inputs)})".encode())[:4]
        r = h.send(0, EXCHANGE_ADDRESS, data)  # no arguments: short calldata
        if inputs:
            assert r.status == 0
            code, _ = decode_error(r.output)
            assert code != 24, f"{name}: selector unknown to the precompile"


# -- money in and out -------------------------------------------------------------------

def test_native_deposit_takes_msg_value_and_withdraw_pays_eth():
    h = Harness(fast=True)
    before = h.state.get_balance(SENDERS[0])
    r = h.send(0, EXCHANGE_ADDRESS, calldata("deposit", WETH, 10**18), value=10**18)
    assert r.status == 1
    assert h.state.get_balance(EXCHANGE_ADDRESS) == 10**18
    assert h.runtime.engine.balances(SENDERS[0])[WETH] == (10**18, 0)
    (log,) = r.logs
    assert log.address == EXCHANGE_ADDRESS and EVENTS[log.topics[0]]["name"] == "Deposited"
    assert log.topics[1] == SENDERS[0].rjust(32, b"\x00")
    r = h.send(0, EXCHANGE_ADDRESS, calldata("withdraw", WETH, 4 * 10**17))
    assert r.status == 1
    assert h.state.get_balance(EXCHANGE_ADDRESS) == 6 * 10**17
    fees = sum(x * 2 * 10**9 for x in (h.gas,))  # effective price: base 1 gwei + tip 1 gwei
    assert h.state.get_balance(SENDERS[0]) == before - 10**18 + 4 * 10**17 - fees


@pytest.mark.parametrize("value", [0, 10**18 - 1, 10**18 + 1])
def test_native_deposit_with_the_wrong_value_reverts_and_changes_nothing(value):
    h = Harness(fast=True)
    digest = h.digest()
    r = h.send(0, EXCHANGE_ADDRESS, calldata("deposit", WETH, 10**18), value=value)
    assert r.status == 0 and decode_error(r.output)[0] == 4  # INVALID_AMOUNT
    assert h.digest() == digest and h.state.get_balance(EXCHANGE_ADDRESS) == 0


def test_withdrawing_more_than_the_balance_reverts():
    h = Harness(fast=True)
    h.send(0, EXCHANGE_ADDRESS, calldata("deposit", WETH, 10**18), value=10**18)
    r = h.send(0, EXCHANGE_ADDRESS, calldata("withdraw", WETH, 2 * 10**18))
    assert r.status == 0 and decode_error(r.output)[0] == 5  # INSUFFICIENT_BALANCE
    assert h.state.get_balance(EXCHANGE_ADDRESS) == 10**18


def test_value_sent_to_a_non_payable_function_reverts():
    h = Harness(fast=True)
    r = h.send(0, EXCHANGE_ADDRESS, calldata("deposit", USDC, 10**9), value=1)
    assert r.status == 0 and h.state.get_balance(EXCHANGE_ADDRESS) == 0


# -- trading through transactions ----------------------------------------------------------

def test_a_cross_emits_fill_logs_and_returns_the_order_result():
    h = Harness(fast=True)
    h.send(0, EXCHANGE_ADDRESS, calldata("deposit", WETH, 10**18), value=10**18)
    h.send(1, EXCHANGE_ADDRESS, calldata("deposit", USDC, 10**10))
    r = h.send(0, EXCHANGE_ADDRESS, place(ETH_USDC, 1, PRICE, 100 * LOT))
    assert r.status == 1
    order_id, status, filled, remaining = decode(["uint256", "uint8", "uint256", "uint256"], r.output)
    assert (filled, remaining) == (0, 100 * LOT)
    r = h.send(1, EXCHANGE_ADDRESS, place(ETH_USDC, 0, PRICE, 40 * LOT))
    assert r.status == 1
    names = [EVENTS[log.topics[0]]["name"] for log in r.logs]
    assert names == ["OrderAccepted", "Fill"]
    fill = r.logs[1]
    assert fill.topics[2] == SENDERS[0].rjust(32, b"\x00")  # maker
    assert fill.topics[3] == SENDERS[1].rjust(32, b"\x00")  # taker
    assert h.runtime.engine.balances(SENDERS[1])[WETH] == (40 * LOT, 0)
    # Gas is a function of what the command did: one more event costs EVENT_GAS more.
    assert r.gas_used > 21_000


def test_a_rejected_order_reverts_with_the_engine_reason():
    h = Harness(fast=True)
    h.send(1, EXCHANGE_ADDRESS, calldata("deposit", USDC, 10**10))
    digest = h.digest()
    r = h.send(1, EXCHANGE_ADDRESS, place(ETH_USDC, 0, PRICE + 1, LOT))
    assert r.status == 0
    code, reason = decode_error(r.output)
    assert code == 6 and "OFF_TICK" in reason
    assert h.digest() == digest


def test_out_of_gas_consumes_everything_and_leaves_no_order():
    h = Harness(fast=True)
    h.send(1, EXCHANGE_ADDRESS, calldata("deposit", USDC, 10**10))
    digest = h.digest()
    data = place(ETH_USDC, 0, PRICE, LOT)
    probe = h.send(1, EXCHANGE_ADDRESS, data)
    assert probe.status == 1
    digest = h.digest()
    r = h.send(1, EXCHANGE_ADDRESS, data, gas=probe.gas_used - 1)
    assert r.status == 0 and r.gas_used == probe.gas_used - 1
    assert h.digest() == digest


def test_garbage_calldata_reverts_cleanly():
    h = Harness(fast=True)
    for data in (b"", b"\x01\x02", b"\xde\xad\xbe\xef" + b"\x00" * 64, place(0, 0, 0, 0)[:40]):
        r = h.send(0, EXCHANGE_ADDRESS, data)
        assert r.status == 0
        decode_error(r.output)


# -- contracts calling the exchange --------------------------------------------------------

@pytest.fixture(params=[True, False], ids=["fast", "evm"])
def with_user(request):
    h = Harness(fast=request.param)
    user = h.deploy(0, "ExchangeUser")
    assert h.send(0, user, contract_call("ExchangeUser", "fund", USDC, 10**10)).status == 1
    return h, user


def test_a_reverting_caller_leaves_no_trace_in_the_engine(with_user):
    h, user = with_user
    digest = h.digest()
    r = h.send(0, user, contract_call("ExchangeUser", "placeThenRevert", ETH_USDC, 0, PRICE, LOT))
    assert r.status == 0
    assert h.digest() == digest
    assert h.runtime.engine.open_orders(user) == []


def test_an_inner_revert_undoes_only_the_inner_order(with_user):
    h, user = with_user
    r = h.send(0, user, contract_call("ExchangeUser", "placeTwiceOneUndone", ETH_USDC, 0, PRICE, LOT))
    assert r.status == 1
    (kept,) = h.runtime.engine.open_orders(user)
    assert kept.price == PRICE + 10
    assert [EVENTS[log.topics[0]]["name"] for log in r.logs] == ["OrderAccepted"]


def test_delegatecall_and_staticcall_cannot_trade(with_user):
    h, user = with_user
    digest = h.digest()
    for fn in ("delegatePlace", "staticPlace"):
        r = h.send(0, user, contract_call("ExchangeUser", fn, ETH_USDC, 0, PRICE, LOT))
        assert r.status == 1 and decode(["bool"], r.output) == (False,)
    assert h.digest() == digest


def test_a_contract_reads_the_book_and_the_error_data(with_user):
    h, user = with_user
    h.send(0, user, contract_call("ExchangeUser", "place", ETH_USDC, 0, PRICE, LOT))
    r = h.send(0, user, contract_call("ExchangeUser", "bestBid", ETH_USDC))
    assert decode(["uint256"], r.output) == (PRICE,)
    r = h.send(0, user, contract_call("ExchangeUser", "tryPlace", ETH_USDC, 0, PRICE + 3, LOT))
    ok, data = decode(["bool", "bytes"], r.output)
    assert not ok and decode_error(data)[0] == 6


# -- one semantics: fast path == py-evm ----------------------------------------------------

action = st.one_of(
    st.tuples(st.just("place"), st.integers(0, 2), st.sampled_from([0, 1]),
              st.integers(-5, 5), st.integers(1, 60), st.sampled_from([0, 1, 2, 3])),
    st.tuples(st.just("cancel"), st.integers(0, 2), st.integers(1, 30)),
    st.tuples(st.just("withdraw"), st.integers(0, 2), st.sampled_from([WETH, USDC]),
              st.sampled_from([1, 10**17, 10**30])),
    st.tuples(st.just("lowgas"), st.integers(0, 2)),
    st.tuples(st.just("garbage"), st.integers(0, 2), st.binary(max_size=40)),
)


def run_flow(actions, fast: bool):
    h = Harness(fast)
    out = []
    for i in range(len(KEYS)):
        h.send(i, EXCHANGE_ADDRESS, calldata("deposit", WETH, 10**19), value=10**19)
        h.send(i, EXCHANGE_ADDRESS, calldata("deposit", USDC, 10**11))
    for a in actions:
        kind, who = a[0], a[1]
        if kind == "place":
            _, _, side, offset, lots, tif = a
            data = place(ETH_USDC, side, PRICE + 10 * offset, lots * LOT, tif=tif)
        elif kind == "cancel":
            data = calldata("cancelOrder", a[2])
        elif kind == "withdraw":
            data = calldata("withdraw", a[2], a[3])
        elif kind == "lowgas":
            data = place(ETH_USDC, 0, PRICE, LOT)
        else:
            data = a[2]
        try:
            r = h.send(who, EXCHANGE_ADDRESS, data, gas=24_000 if kind == "lowgas" else 300_000)
        except TxInvalid as exc:
            out.append(("invalid", exc.message))
            continue
        out.append((r.status, r.gas_used, r.output, [(g.address, g.topics, g.data) for g in r.logs],
                    r.consensus_encoding()))
    h.state.set_storage(EXCHANGE_ADDRESS, DIGEST_SLOT, int.from_bytes(h.digest(), "big"))
    return out, h.state.state_root(), h.digest(), list(h.state.iter_accounts())


@settings(max_examples=40, deadline=None)
@given(actions=st.lists(action, min_size=1, max_size=25))
def test_fast_path_equals_the_evm_path(actions):
    assert run_flow(actions, fast=True) == run_flow(actions, fast=False)


# -- the command log kept in the store ------------------------------------------------------

def test_the_command_log_round_trips_every_command_kind():
    import exchange as ex
    from precompiles.exchange import decode_commands, encode_commands

    a, b = SENDERS[0], SENDERS[1]
    first, second = ex.Context(7, 1_700_000_000), ex.Context(8, 1_700_000_001)
    commands = [
        (first, ex.ExpireOrders()),
        (first, ex.Deposit(a, USDC, 10**9)),
        (first, ex.PlaceOrder(a, ETH_USDC, ex.Side.SELL, PRICE, LOT, ex.TimeInForce.IOC)),
        (first, ex.Batch(b, (ex.CancelOrder(b, 3), ex.PlaceOrder(b, ETH_USDC, ex.Side.BUY, PRICE, LOT)))),
        (second, ex.CancelAll(a, None)),
        (second, ex.Withdraw(a, WETH, 5)),
    ]
    decoded = decode_commands(encode_commands(commands))
    assert decoded == commands
    assert type(decoded[2][1].time_in_force) is ex.TimeInForce
    # Replaying the log on a fresh engine gives the same state as applying it.
    applied, replayed = Harness(True).runtime, Harness(True).runtime
    for ctx, command in commands:
        try:
            applied.engine.apply(command, ctx)
        except ex.ExchangeError:
            pass
    for ctx, command in decoded:
        try:
            replayed.engine.apply(command, ctx)
        except ex.ExchangeError:
            pass
    assert applied.digest() == replayed.digest()


def test_the_margin_view_is_taken_at_the_block_time_of_the_call():
    """margin(account) values a lender's claim with the interest accrued to the
    block the call runs in - not to whenever some other account last placed an
    order, a time no restart restores (found by review)."""
    import exchange as ex

    rt = ExchangeRuntime(Engine(load(default_exchange_table())), native_asset=WETH)
    e = rt.engine
    lender, borrower = SENDERS[0], SENDERS[1]
    t0 = ex.Context(1, 1_700_000_000)
    usd = 10**6
    e.apply(ex.Deposit(lender, USDC, 100_000 * usd), t0)
    e.apply(ex.Deposit(borrower, USDC, 100_000 * usd), t0)
    e.apply(ex.PlaceOrder(lender, 4, 1, ex.RATE_SCALE // 2, 50_000 * usd), t0)  # USDC-LEND offer at 50 %/year
    e.apply(ex.PlaceOrder(borrower, 4, 0, ex.RATE_SCALE // 2, 50_000 * usd, time_in_force=ex.TimeInForce.IOC), t0)
    data = calldata("margin", to_checksum_address(lender))

    def equity(ctx):
        out = rt.call(SENDERS[2], 0, data, True, 10**6, ctx, lambda *a: None, lambda *a: False)
        assert out.success, out
        return decode(["int256"] * 5, out.output)[0]

    day = ex.Context(2, t0.timestamp + 86_400)
    assert equity(day) == e.margin(lender, day.timestamp).equity > equity(t0) == e.margin(lender, t0.timestamp).equity
