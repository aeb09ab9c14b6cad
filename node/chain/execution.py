"""Executing one transaction against the flat state: the interpreter path and the
transfer fast path, with one semantics.

`Executor.execute(tx, cumulative_gas)` validates against the current state and block
environment, runs the transaction and returns its `Receipt`; an invalid transaction
(nonce, funds, fee below base fee, gas above what is left in the block) raises
`TxInvalid` and changes nothing. A plain value transfer to an account without code
skips py-evm; tests/node/test_execution.py runs random workloads through both paths
and demands equal receipts, gas and state roots.
"""
from __future__ import annotations

from eth.exceptions import Revert
from eth.vm.execution_context import ExecutionContext
from eth.vm.forks.prague import PragueVM

from node.chain.blocks import Log, Receipt, logs_bloom
from node.chain.state import BlixtState, FlatAccountDB, FlatState
from node.chain.transactions import (
    SET_CODE, TX_GAS, SignedTx, calldata_floor_gas, keccak,
)
from exchange import Context
from precompiles.exchange import EXCHANGE_ADDRESS

import rlp

# Precompiles 0x01..0x11 (Prague incl. BLS12-381) are "code" for the fast path's purpose.
_PRECOMPILE_LIMIT = 0x11
DELEGATION_PREFIX = b"\xef\x01\x00"


class TxInvalid(Exception):
    """The transaction cannot be included now; geth's wording in `message`."""

    def __init__(self, message: str, retry_later: bool = False) -> None:
        super().__init__(message)
        self.message = message
        # True when it may become valid later (e.g. a nonce gap): EIP-7966's code 5.
        self.retry_later = retry_later


class BlockEnv:
    """What a block gives the transactions in it: number, time, fees, coinbase."""

    __slots__ = ("number", "timestamp", "base_fee", "gas_limit", "coinbase", "mix_hash",
                 "prev_hashes", "chain_id")

    def __init__(self, number, timestamp, base_fee, gas_limit, coinbase, mix_hash, prev_hashes, chain_id):
        self.number = number
        self.timestamp = timestamp
        self.base_fee = base_fee
        self.gas_limit = gas_limit
        self.coinbase = coinbase
        self.mix_hash = mix_hash
        self.prev_hashes = prev_hashes
        self.chain_id = chain_id

    def execution_context(self) -> ExecutionContext:
        return ExecutionContext(
            coinbase=self.coinbase, timestamp=self.timestamp, block_number=self.number,
            difficulty=0, mix_hash=self.mix_hash, gas_limit=self.gas_limit,
            prev_hashes=self.prev_hashes, chain_id=self.chain_id,
            base_fee_per_gas=self.base_fee, excess_blob_gas=0,
        )


class Executor:
    """Runs transactions of one block against a FlatState."""

    def __init__(self, state: FlatState, env: BlockEnv, fast_paths: bool = True) -> None:
        self.state = state
        self.env = env
        self.fast_paths = fast_paths
        self._account_db = FlatAccountDB(state)
        self._evm_state = None

    @property
    def evm_state(self) -> BlixtState:
        if self._evm_state is None:
            self._evm_state = BlixtState(self._account_db, self.env.execution_context())
        return self._evm_state

    def check(self, tx: SignedTx, block_gas_used: int) -> None:
        """Raise TxInvalid if `tx` cannot run now. Changes nothing."""
        env = self.env
        state = self.state
        expected = state.get_nonce(tx.sender)
        if tx.nonce < expected:
            raise TxInvalid(f"nonce too low: next nonce {expected}, tx nonce {tx.nonce}")
        if tx.nonce > expected:
            raise TxInvalid(f"nonce too high: next nonce {expected}, tx nonce {tx.nonce}", retry_later=True)
        if tx.gas < tx.intrinsic_gas:
            raise TxInvalid(f"intrinsic gas too low: have {tx.gas}, want {tx.intrinsic_gas}")
        floor = calldata_floor_gas(tx)
        if tx.gas < floor:
            raise TxInvalid(f"insufficient gas for floor data gas cost: have {tx.gas}, want {floor}")
        if tx.gas > env.gas_limit - block_gas_used:
            raise TxInvalid("gas limit reached", retry_later=True)
        if tx.fee_cap() < env.base_fee:
            raise TxInvalid(
                f"max fee per gas less than block base fee: address 0x{tx.sender.hex()}, "
                f"maxFeePerGas: {tx.fee_cap()}, baseFee: {env.base_fee}", retry_later=True)
        cost = tx.gas * tx.fee_cap() + tx.value
        balance = state.get_balance(tx.sender)
        if balance < cost:
            raise TxInvalid(
                f"insufficient funds for gas * price + value: address 0x{tx.sender.hex()} "
                f"have {balance} want {cost}")
        code = state.get_code(tx.sender)
        if code and not code.startswith(DELEGATION_PREFIX):
            raise TxInvalid(f"sender not an eoa: address 0x{tx.sender.hex()}, codehash: 0x{keccak(code).hex()}")

    def execute(self, tx: SignedTx, block_gas_used: int) -> Receipt:
        self.check(tx, block_gas_used)
        runtime = self.state.exchange
        if self.fast_paths and tx.is_plain_transfer and self._is_plain_recipient(tx.to):
            receipt = self._transfer(tx)
        elif self.fast_paths and tx.to == EXCHANGE_ADDRESS and runtime is not None and tx.type != SET_CODE:
            receipt = self._exchange_call(tx, runtime)
        else:
            receipt = self._interpret(tx)
        if runtime is not None:
            runtime.end_transaction()
        receipt.cumulative_gas_used = block_gas_used + receipt.gas_used
        return receipt

    # -- the fast path -------------------------------------------------------------

    def _is_plain_recipient(self, to: bytes) -> bool:
        if int.from_bytes(to, "big") <= _PRECOMPILE_LIMIT:
            return False
        return not self.state.get_code(to)

    def _transfer(self, tx: SignedTx) -> Receipt:
        """What py-evm does for a value transfer to a code-less account, without it."""
        state = self.state
        env = self.env
        price = tx.effective_gas_price(env.base_fee)
        sender, to = tx.sender, tx.to
        state.set_nonce(sender, tx.nonce + 1)
        state.set_balance(sender, state.get_balance(sender) - TX_GAS * price - tx.value)
        if tx.value:
            state.set_balance(to, state.get_balance(to) + tx.value)
        tip = TX_GAS * (price - env.base_fee)
        coinbase = env.coinbase
        if tip:
            state.set_balance(coinbase, state.get_balance(coinbase) + tip)
        # EIP-161: a touched account left empty is removed (value-0 sends, zero tips).
        for touched in (to, coinbase):
            if touched != sender and state.account_exists(touched) and state.get_balance(touched) == 0 \
                    and state.get_nonce(touched) == 0 and not state.get_code(touched):
                state.delete_account(touched)
        r = Receipt()
        r.tx_hash = tx.hash
        r.tx_type = tx.type
        r.sender = sender
        r.to = to
        r.status = 1
        r.gas_used = TX_GAS
        r.effective_gas_price = price
        return r

    def _exchange_call(self, tx: SignedTx, runtime) -> Receipt:
        """What py-evm does for a transaction sent straight to the exchange precompile:
        buy gas, move the value, run the precompile in a checkpoint, refund, tip."""
        state = self.state
        env = self.env
        price = tx.effective_gas_price(env.base_fee)
        sender = tx.sender
        state.set_nonce(sender, tx.nonce + 1)
        state.set_balance(sender, state.get_balance(sender) - tx.gas * price)
        message_gas = tx.gas - tx.intrinsic_gas
        checkpoint = state.checkpoint()
        if tx.value:
            state.set_balance(sender, state.get_balance(sender) - tx.value)
            state.set_balance(EXCHANGE_ADDRESS, state.get_balance(EXCHANGE_ADDRESS) + tx.value)
        outcome = runtime.call(sender, tx.value, tx.data, False, message_gas,
                               Context(env.number, env.timestamp), state.add_undo,
                               lambda to, amount: _pay_from_exchange(state, to, amount))
        if outcome.success:
            state.commit(checkpoint)
        else:
            state.revert(checkpoint)
        gas_remaining = 0 if outcome.burn else message_gas - outcome.gas_used
        floor = calldata_floor_gas(tx)
        gas_used = max(tx.gas - gas_remaining, floor)  # EIP-7623 data floor; no refunds here
        state.set_balance(sender, state.get_balance(sender) + (tx.gas - gas_used) * price)
        coinbase = env.coinbase
        tip = gas_used * (price - env.base_fee)
        if tip:
            state.set_balance(coinbase, state.get_balance(coinbase) + tip)
        elif coinbase != sender and state.account_exists(coinbase) and state.get_balance(coinbase) == 0 \
                and state.get_nonce(coinbase) == 0 and not state.get_code(coinbase):
            state.delete_account(coinbase)  # EIP-161: touched and empty
        r = Receipt()
        r.tx_hash = tx.hash
        r.tx_type = tx.type
        r.sender = sender
        r.to = EXCHANGE_ADDRESS
        r.status = 1 if outcome.success else 0
        r.gas_used = gas_used
        r.effective_gas_price = price
        r.output = outcome.output
        if outcome.success:
            r.logs = tuple(Log(address, topics, data) for address, topics, data in outcome.logs)
            r.bloom = logs_bloom(r.logs)
        else:
            r.error = "execution reverted" if not outcome.burn else "OutOfGas: exchange precompile: out of gas"
        return r

    # -- the interpreter path ----------------------------------------------------------

    def _interpret(self, tx: SignedTx) -> Receipt:
        from eth_utils import ValidationError

        evm_state = self.evm_state
        evm_tx = tx.evm_transaction()
        evm_state.lock_changes()
        try:
            computation = evm_state.apply_transaction(evm_tx)
        except ValidationError as exc:
            raise TxInvalid(str(exc)) from None
        evm_state.lock_changes()
        r = Receipt()
        r.tx_hash = tx.hash
        r.tx_type = tx.type
        r.sender = tx.sender
        r.to = tx.to
        r.status = 0 if computation.is_error else 1
        r.gas_used = PragueVM.finalize_gas_used(evm_tx, computation)
        r.effective_gas_price = tx.effective_gas_price(self.env.base_fee)
        if tx.to is None:
            r.contract_address = contract_address(tx.sender, tx.nonce)
        if computation.is_error:
            r.output = computation.output if isinstance(computation.error, Revert) else b""
            r.error = _error_text(computation)
        else:
            r.output = computation.output
            r.logs = tuple(
                Log(address, tuple(topic.to_bytes(32, "big") for topic in topics), data)
                for address, topics, data in computation.get_log_entries()
            )
            r.bloom = logs_bloom(r.logs)
        return r


def _pay_from_exchange(state: FlatState, to: bytes, amount: int) -> bool:
    balance = state.get_balance(EXCHANGE_ADDRESS)
    if balance < amount:
        return False
    state.set_balance(EXCHANGE_ADDRESS, balance - amount)
    state.set_balance(to, state.get_balance(to) + amount)
    return True


def contract_address(sender: bytes, nonce: int) -> bytes:
    return keccak(rlp.encode([sender, nonce]))[12:]


def _error_text(computation) -> str:
    error = computation.error
    if isinstance(error, Revert):
        return "execution reverted"
    name = type(error).__name__
    text = str(error)
    return f"{name}: {text}" if text else name
