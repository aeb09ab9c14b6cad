"""eth_call and eth_estimateGas: run a message against the live (or sealed head) state
inside a checkpoint that is always reverted, so nothing a call does survives it."""
from __future__ import annotations

from typing import Any

from eth.exceptions import Revert
from eth.vm.forks.prague import PragueVM
from eth.vm.spoof import SpoofTransaction
from eth_utils import ValidationError

from node.chain.blocks import next_base_fee
from node.chain.execution import BlockEnv
from node.chain.history import state_at
from node.chain.state import BlixtState, FlatAccountDB
from precompiles.abi import ERROR_SELECTOR as EXCHANGE_ERROR_SELECTOR
from node.chain.transactions import keccak

ZERO_ADDRESS = b"\x00" * 20
ESTIMATE_ERROR_RATIO_PER_MILLE = 15  # geth stops the search within 1.5 %
PANIC_SELECTOR = bytes.fromhex("4e487b71")
ERROR_SELECTOR = bytes.fromhex("08c379a0")


class CallError(Exception):
    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


class CallResult:
    __slots__ = ("output", "gas_used", "error")

    def __init__(self, output: bytes, gas_used: int) -> None:
        self.output = output
        self.gas_used = gas_used


def run_call(chain, req: Any, number: int | None, overrides: Any, gas_cap: int, estimate: bool):
    from node.rpc.eth import parse_address, parse_data, parse_quantity, invalid_params

    if not isinstance(req, dict):
        raise invalid_params("call object expected")
    sender = parse_address(req["from"], "from") if req.get("from") else ZERO_ADDRESS
    to = parse_address(req["to"], "to") if req.get("to") else None
    data_field = req.get("input", req.get("data"))
    data = parse_data(data_field, "input") if data_field else b""
    value = parse_quantity(req.get("value", "0x0"), "value")
    gas = min(parse_quantity(req["gas"], "gas"), gas_cap) if "gas" in req else gas_cap
    if number is not None and (number != chain.head.number or (chain.open is not None and chain.open.txs)):
        # An explicit block reads that sealed block's state, lazily from history.
        state = state_at(chain.store, number)
        env = _env_of(chain, number)
    else:
        state = chain.state
        env = chain.open.env if chain.open is not None else _pending_env(chain)
    # As geth's eth_call (NoBaseFee): an unpriced call runs with a zero base fee.
    env = BlockEnv(env.number, env.timestamp, 0, env.gas_limit, env.coinbase, env.mix_hash,
                   env.prev_hashes, env.chain_id)
    cp = state.checkpoint()
    try:
        if overrides:
            _apply_overrides(state, overrides)
        if estimate:
            if to is not None and not data and not state.get_code(to) and int.from_bytes(to, "big") > 0x11:
                _execute(state, env, sender, to, value, data, 21_000)  # raises if it can't pay
                return 21_000
            return _estimate(state, env, sender, to, value, data, gas)
        result = _execute(state, env, sender, to, value, data, gas)
        return result
    finally:
        state.revert(cp)


def _env_of(chain, number: int) -> BlockEnv:
    header = chain.header(number)
    hashes = []
    n = number - 1
    while n >= 0 and len(hashes) < 256:
        hashes.append(chain.header(n).hash)
        n -= 1
    return BlockEnv(number=number, timestamp=header.timestamp, base_fee=header.base_fee,
                    gas_limit=header.gas_limit, coinbase=header.coinbase, mix_hash=header.mix_hash,
                    prev_hashes=hashes, chain_id=chain.chain_id)


def _pending_env(chain) -> BlockEnv:
    head = chain.head
    return BlockEnv(
        number=head.number + 1, timestamp=head.timestamp + 1,
        base_fee=next_base_fee(head.base_fee, head.gas_used, head.gas_limit),
        gas_limit=head.gas_limit, coinbase=head.coinbase,
        mix_hash=keccak(b"prevrandao" + head.hash), prev_hashes=chain._prev_hashes(),
        chain_id=chain.chain_id,
    )


def _execute(state, env: BlockEnv, sender, to, value, data, gas) -> CallResult:
    cp = state.checkpoint()
    # A simulated exchange command is not traffic: keep it out of the metrics.
    runtime = getattr(state, "exchange", None)
    observer = runtime.observer if runtime is not None else None
    if runtime is not None:
        runtime.observer = None
    try:
        evm_state = BlixtState(FlatAccountDB(state), env.execution_context())
        builder = PragueVM.get_transaction_builder()
        unsigned = builder.create_unsigned_transaction(
            nonce=state.get_nonce(sender), gas_price=0, gas=gas,
            to=to if to is not None else b"", value=value, data=data)
        tx = SpoofTransaction(unsigned, from_=sender)
        try:
            computation = evm_state.apply_transaction(tx)
        except ValidationError as exc:
            raise CallError(-32000, str(exc)) from None
        if computation.is_error:
            error = computation.error
            if isinstance(error, Revert):
                output = computation.output
                raise CallError(3, _revert_message(output), "0x" + output.hex())
            raise CallError(-32000, _vm_error(error))
        used = gas - computation.get_gas_remaining()
        return CallResult(computation.output, used)
    finally:
        state.revert(cp)
        if runtime is not None:
            runtime.observer = observer


def _estimate(state, env, sender, to, value, data, cap) -> int:
    first = _execute(state, env, sender, to, value, data, cap)  # raises on failure
    lo = first.gas_used - 1
    hi = cap

    def ok(gas: int) -> bool:
        try:
            _execute(state, env, sender, to, value, data, gas)
            return True
        except CallError as exc:
            if exc.code == 3 or "out of gas" in exc.message.lower() or "OutOfGas" in exc.message \
                    or "intrinsic" in exc.message or "insufficient gas" in exc.message.lower():
                return False
            raise

    optimistic = min((first.gas_used + 2300) * 64 // 63, hi)
    if ok(optimistic):
        hi = optimistic
    else:
        lo = optimistic
    while lo + 1 < hi:
        if (hi - lo) * 1000 // hi < ESTIMATE_ERROR_RATIO_PER_MILLE:
            break
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi


def _apply_overrides(state, overrides: Any) -> None:
    from node.rpc.eth import parse_address, parse_data, parse_hash, parse_quantity, invalid_params

    if not isinstance(overrides, dict):
        raise invalid_params("state overrides must be an object")
    for address_hex, o in overrides.items():
        address = parse_address(address_hex, "override address")
        if not isinstance(o, dict):
            raise invalid_params("account override must be an object")
        if "balance" in o:
            state.set_balance(address, parse_quantity(o["balance"], "balance"))
        if "nonce" in o:
            state.set_nonce(address, parse_quantity(o["nonce"], "nonce"))
        if "code" in o:
            state.set_code(address, parse_data(o["code"], "code"))
        if "state" in o and "stateDiff" in o:
            raise invalid_params("account override has both state and stateDiff")
        if "state" in o:
            state.clear_storage(address)
        for slot_hex, value_hex in (o.get("state") or o.get("stateDiff") or {}).items():
            state.set_storage(address, int.from_bytes(parse_hash(slot_hex, "slot"), "big"),
                              int.from_bytes(parse_hash(value_hex, "value"), "big"))


def _revert_message(output: bytes) -> str:
    if output[:4] == ERROR_SELECTOR and len(output) >= 68:
        try:
            length = int.from_bytes(output[36:68], "big")
            reason = output[68:68 + length].decode("utf-8", "replace")
            return f"execution reverted: {reason}"
        except Exception:
            pass
    if output[:4] == PANIC_SELECTOR and len(output) >= 36:
        return f"execution reverted: panic: 0x{int.from_bytes(output[4:36], 'big'):02x}"
    if output[:4] == EXCHANGE_ERROR_SELECTOR and len(output) >= 100:
        # The exchange precompile's ExchangeError(uint32 code, string reason):
        # shown like a revert string, so `cast call` and plain JSON-RPC users read it.
        try:
            code = int.from_bytes(output[4:36], "big")
            length = int.from_bytes(output[68:100], "big")
            reason = output[100:100 + length].decode("utf-8", "replace")
            return f"execution reverted: ExchangeError {code}: {reason}"
        except Exception:
            pass
    return "execution reverted"


def _vm_error(error) -> str:
    name = type(error).__name__
    if name == "OutOfGas":
        return "out of gas"
    if name == "InsufficientFunds":
        return "insufficient funds for transfer"
    text = str(error)
    return f"{name}: {text}" if text else name
