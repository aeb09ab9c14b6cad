"""py-evm's side of the exchange precompile: Blixt's computation class.

`BlixtComputation` is Prague's computation with one more precompile at
EXCHANGE_ADDRESS. The precompile finds the runtime on the state it runs against
(`state.flat.exchange`, set by the node on the head state); a state without one
(historical eth_call) answers with a revert, never with a wrong book.
"""
from __future__ import annotations

from eth.exceptions import OutOfGas, Revert
from eth.vm.forks.prague.computation import PRAGUE_PRECOMPILES, PragueComputation

from exchange import Context, Reason

from precompiles import abi
from precompiles.exchange import EXCHANGE_ADDRESS


def exchange_precompile(computation):
    state = computation.state
    msg = computation.msg
    runtime = getattr(state.flat, "exchange", None) if hasattr(state, "flat") else None
    if runtime is None:
        _revert(computation, Reason.NOT_AUTHORIZED, "the exchange state is only served at the head block")
    if msg.storage_address != EXCHANGE_ADDRESS:
        # DELEGATECALL / CALLCODE would run the exchange as someone else's code.
        _revert(computation, Reason.NOT_AUTHORIZED, "the exchange must be called directly (no delegatecall)")
    flat = state.flat
    outcome = runtime.call(
        msg.sender, msg.value, msg.data_as_bytes, msg.is_static, computation.get_gas_remaining(),
        Context(state.block_number, state.timestamp), flat.add_undo,
        lambda to, amount: _pay(state, to, amount))
    if outcome.burn:
        raise OutOfGas("exchange precompile: out of gas")
    computation.consume_gas(outcome.gas_used, reason="exchange precompile")
    if not outcome.success:
        computation.output = outcome.output
        raise Revert(outcome.output)
    for address, topics, data in outcome.logs:
        computation.add_log_entry(address, tuple(int.from_bytes(t, "big") for t in topics), data)
    computation.output = outcome.output
    return computation


def _pay(state, to: bytes, amount: int) -> bool:
    if state.get_balance(EXCHANGE_ADDRESS) < amount:
        return False
    state.delta_balance(EXCHANGE_ADDRESS, -amount)
    state.delta_balance(to, amount)
    return True


def _revert(computation, reason: Reason, message: str) -> None:
    data = abi.encode_error(int(reason), message)
    computation.consume_gas(min(computation.get_gas_remaining(), 1_000), reason="exchange precompile")
    computation.output = data
    raise Revert(data)


class BlixtComputation(PragueComputation):
    _precompiles = {**PRAGUE_PRECOMPILES, EXCHANGE_ADDRESS: exchange_precompile}
