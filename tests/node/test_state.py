"""FlatState, FlatAccountDB and BlixtState against py-evm's own AccountDB and PragueState.

The differential tests run the same random workloads through stock py-evm
(PragueState over eth.db.account.AccountDB on an AtomicDB) and through BlixtState over
a FlatState, and demand the same success/revert, output, logs, gas used and state root
after every transaction.
"""

import random

import pytest
from eth.constants import BLANK_ROOT_HASH, CREATE_CONTRACT_ADDRESS
from eth.db.account import AccountDB
from eth.db.atomic import AtomicDB
from eth.vm.execution_context import ExecutionContext
from eth.vm.forks.prague import PragueVM
from eth.vm.forks.prague.state import PragueState
from eth.vm.forks.prague.transactions import PragueTransactionBuilder
from eth._utils.address import generate_contract_address, generate_safe_contract_address
from eth_keys import keys
from eth_utils import ValidationError
from sha3 import keccak_256

from node.chain.state import (
    EMPTY_CODE_HASH,
    AccountRecord,
    BlixtState,
    FlatAccountDB,
    FlatState,
    prime_sender,
)
from node.chain.trie import BLANK_ROOT

CHAIN_ID = 31337

# py-evm warns on every SELFDESTRUCT it runs; the workloads run it on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:SELFDESTRUCT opcode:DeprecationWarning")
BASE_FEE = 7
COINBASE = bytes.fromhex("c0ffee00000000000000000000000000000000c0")


# ------------------------------------------------------------------ assembler

_OPCODES = {
    "STOP": 0x00, "ADD": 0x01, "SUB": 0x03, "ISZERO": 0x15, "AND": 0x16, "CALLER": 0x33,
    "CALLVALUE": 0x34, "CALLDATALOAD": 0x35, "CALLDATASIZE": 0x36, "CALLDATACOPY": 0x37,
    "CODECOPY": 0x39, "POP": 0x50, "MSTORE": 0x52, "SLOAD": 0x54, "SSTORE": 0x55,
    "JUMP": 0x56, "JUMPI": 0x57, "GAS": 0x5A, "JUMPDEST": 0x5B, "TLOAD": 0x5C,
    "TSTORE": 0x5D, "DUP1": 0x80, "DUP6": 0x85, "SWAP1": 0x90, "LOG1": 0xA1,
    "CALL": 0xF1, "RETURN": 0xF3, "CREATE2": 0xF5, "REVERT": 0xFD, "SELFDESTRUCT": 0xFF,
}


def assemble(*items) -> bytes:
    """Opcode names; ints and bytes become PUSHes; "@x" a JUMPDEST label; ":x" PUSH2 x."""
    def emit(labels):
        out = bytearray()
        for item in items:
            if isinstance(item, str) and item.startswith("@"):
                labels[item[1:]] = len(out)
                out.append(0x5B)
            elif isinstance(item, str) and item.startswith(":"):
                out += bytes((0x61,)) + labels.get(item[1:], 0).to_bytes(2, "big")
            elif isinstance(item, str):
                out.append(_OPCODES[item])
            else:
                data = item if isinstance(item, bytes) else item.to_bytes(max(1, (item.bit_length() + 7) // 8), "big")
                out += bytes((0x5F + len(data),)) + data
        return bytes(out)

    labels = {}
    emit(labels)
    return emit(labels)


def deployer(runtime: bytes, constructor: bytes = b"") -> bytes:
    """Init code: run `constructor`, then return `runtime` (appended after it)."""
    prefix_length = len(constructor) + 13
    copy = bytes((0x61,)) + len(runtime).to_bytes(2, "big") + b"\x80" + bytes((0x61,)) + (
        prefix_length.to_bytes(2, "big")) + b"\x60\x00\x39\x60\x00\xf3"
    assert len(copy) == 13
    return constructor + copy + runtime


# STORE(slot=word0, value=word1, revert_if=word2): logs the old value under topic slot;
# counts its calls in the transaction in transient slot 1 (EIP-1153), copies the count
# to storage slot 100 and returns it; or reverts after all of that.
STORE_RUNTIME = assemble(
    0, "CALLDATALOAD", "DUP1", "SLOAD", 0, "MSTORE",
    32, "CALLDATALOAD", "SWAP1", "SSTORE",
    0, "CALLDATALOAD", 32, 0, "LOG1",
    1, "TLOAD", 1, "ADD", "DUP1", 1, "TSTORE", "DUP1", 100, "SSTORE", 32, "MSTORE",
    64, "CALLDATALOAD", ":fail", "JUMPI",
    32, 32, "RETURN",
    "@fail", 32, 0, "REVERT",
)
STORE_CONSTRUCTOR = assemble(42, 9, "SSTORE")

# RELAY(target=word0, flags=word1, payload=rest): CALLs target with the payload and
# the call value and stores the success flag in slot 7; flag 2: calls it a second
# time (success in slot 8) — what the first, reverted, call warmed must be cold again;
# flag 1: reverts at the end, taking its callees' effects and warm marks with it.
_RELAY_CALL = (0, 0, 64, "CALLDATASIZE", "SUB", 0, "CALLVALUE", 0, "CALLDATALOAD", "GAS", "CALL")
RELAY_RUNTIME = assemble(
    64, "CALLDATASIZE", "SUB", 64, 0, "CALLDATACOPY",
    *_RELAY_CALL, 7, "SSTORE",
    32, "CALLDATALOAD", 2, "AND", "ISZERO", ":once", "JUMPI",
    *_RELAY_CALL, 8, "SSTORE",
    "@once", 32, "CALLDATALOAD", 1, "AND", ":fail", "JUMPI",
    "STOP",
    "@fail", 0, 0, "REVERT",
)

# A child whose constructor stores slot 0 = 1 and whose code selfdestructs to its caller.
CHILD_INIT = assemble(1, 0, "SSTORE", bytes.fromhex("33ff"), 0, "MSTORE", 2, 30, "RETURN")
assert len(CHILD_INIT) == 16

# FACTORY(salt=word0, skip_call=word1): CREATE2s the child with the call value, stores
# its address in slot 5, and (unless skip_call) calls it at once, so that it
# selfdestructs in the transaction that created it (EIP-6780: really deleted).
FACTORY_RUNTIME = assemble(
    CHILD_INIT, 0, "MSTORE",
    0, "CALLDATALOAD", 16, 16, "CALLVALUE", "CREATE2",
    "DUP1", 5, "SSTORE",
    32, "CALLDATALOAD", ":skip", "JUMPI",
    0, 0, 0, 0, 0, "DUP6", "GAS", "CALL", 6, "SSTORE",
    "@skip", "STOP",
)


def word(value) -> bytes:
    if isinstance(value, bytes):
        return value.rjust(32, b"\x00")
    return value.to_bytes(32, "big")


# ------------------------------------------------------------------ twin chains


def execution_context(block_number: int = 1) -> ExecutionContext:
    return ExecutionContext(
        coinbase=COINBASE, timestamp=1_700_000_000 + block_number, block_number=block_number,
        difficulty=0, mix_hash=b"\x00" * 32, gas_limit=30_000_000, prev_hashes=(),
        chain_id=CHAIN_ID, base_fee_per_gas=BASE_FEE, excess_blob_gas=0,
    )


class Twins:
    """The same chain twice: stock py-evm and Blixt's flat state."""

    def __init__(self, funded):
        self.stock = PragueState(AtomicDB(), execution_context(), BLANK_ROOT_HASH)
        self.flat = FlatState()
        self.blixt = BlixtState(FlatAccountDB(self.flat), execution_context())
        for address, balance in funded.items():
            self.stock.set_balance(address, balance)
            self.blixt.set_balance(address, balance)
        self.stock.lock_changes()
        self.blixt.lock_changes()
        assert self.stock.make_state_root() == self.blixt.make_state_root()

    def apply(self, transaction, primed_sender=None):
        # Each side gets its own decoded copy: py-evm caches per transaction object.
        encoded = transaction.encode()
        stock_tx = PragueTransactionBuilder.decode(encoded)
        blixt_tx = PragueTransactionBuilder.decode(encoded)
        if primed_sender is not None:
            prime_sender(blixt_tx, primed_sender)
        self.stock.lock_changes()  # as py-evm's VM.apply_transaction does
        stock = self.stock.apply_transaction(stock_tx)
        blixt = self.blixt.apply_transaction(blixt_tx)
        self.blixt.lock_changes()
        assert blixt.is_success == stock.is_success
        assert blixt.output == stock.output
        assert blixt.get_log_entries() == stock.get_log_entries()
        assert PragueVM.finalize_gas_used(blixt_tx, blixt) == PragueVM.finalize_gas_used(stock_tx, stock)
        assert self.blixt.make_state_root() == self.stock.make_state_root()
        return blixt


class Wallet:
    def __init__(self, seed: int):
        self.key = keys.PrivateKey(keccak_256(seed.to_bytes(32, "big")).digest())
        self.address = self.key.public_key.to_canonical_address()
        self.nonce = 0

    def sign(self, to, value=0, data=b"", gas=600_000, legacy=False, access_list=()):
        if legacy:
            unsigned = PragueTransactionBuilder.create_unsigned_transaction(
                nonce=self.nonce, gas_price=BASE_FEE + 2, gas=gas, to=to, value=value, data=data)
            tx = unsigned.as_signed_transaction(self.key, chain_id=CHAIN_ID)
        else:
            unsigned = PragueTransactionBuilder.new_unsigned_dynamic_fee_transaction(
                chain_id=CHAIN_ID, nonce=self.nonce, max_priority_fee_per_gas=1,
                max_fee_per_gas=BASE_FEE * 3, gas=gas, to=to, value=value, data=data,
                access_list=list(access_list))
            tx = unsigned.as_signed_transaction(self.key)
        self.nonce += 1
        return tx

    def deploy(self, twins, init_code):
        address = generate_contract_address(self.address, self.nonce)
        computation = twins.apply(self.sign(CREATE_CONTRACT_ADDRESS, data=init_code), self.address)
        assert computation.is_success
        return address


def run_random_workload(seed: int, transactions: int) -> Twins:
    rng = random.Random(seed)
    wallets = [Wallet(seed * 100 + i) for i in range(4)]
    twins = Twins({w.address: 10**21 for w in wallets})
    deployer_wallet = wallets[0]
    store = deployer_wallet.deploy(twins, deployer(STORE_RUNTIME, STORE_CONSTRUCTOR))
    relay = deployer_wallet.deploy(twins, deployer(RELAY_RUNTIME))
    factory = deployer_wallet.deploy(twins, deployer(FACTORY_RUNTIME))
    children = [generate_safe_contract_address(factory, salt, CHILD_INIT) for salt in range(3)]

    def fresh_address():
        return rng.randbytes(20)

    def store_call(slot=None, value=None, revert=None):
        slot = rng.randrange(4) if slot is None else slot
        value = rng.choice((0, 0, 1, 2, 2**255 + 1)) if value is None else value
        revert = int(rng.random() < 0.2) if revert is None else revert
        return word(slot) + word(value) + word(revert)

    for _ in range(transactions):
        wallet = rng.choice(wallets)
        kind = rng.randrange(11)
        legacy = rng.random() < 0.3
        if kind == 0:  # value transfer, often to an account that does not exist yet
            to = fresh_address() if rng.random() < 0.5 else rng.choice(wallets).address
            tx = wallet.sign(to, value=rng.randrange(1, 10**18), gas=21_000, legacy=legacy)
        elif kind == 1:  # zero-value call to a new address: touched, empty, cleared
            tx = wallet.sign(fresh_address(), value=0, gas=21_000, legacy=legacy)
        elif kind in (2, 3):  # SSTORE / SLOAD / clear / revert at the top level
            access = [(store, [rng.randrange(4)])] if rng.random() < 0.3 and not legacy else ()
            tx = wallet.sign(store, data=store_call(), legacy=legacy, access_list=access)
        elif kind == 4:  # nested: relay -> store (either may revert, store maybe twice)
            tx = wallet.sign(relay, value=rng.choice((0, 5)),
                             data=word(store) + word(rng.randrange(4)) + store_call(), legacy=legacy)
        elif kind == 5:  # doubly nested: relay -> relay -> store
            tx = wallet.sign(relay, data=word(relay) + word(rng.randrange(4)) + word(store)
                             + word(rng.randrange(4)) + store_call(), legacy=legacy)
        elif kind == 6:  # relay -> relay -> a new account (value, or an empty touch)
            tx = wallet.sign(relay, value=rng.choice((0, 3)), data=word(relay) + word(rng.randrange(4))
                             + word(fresh_address()) + word(rng.randrange(4)), legacy=legacy)
        elif kind == 7:  # nested call to a precompile (identity)
            tx = wallet.sign(relay, data=word(4) + word(rng.randrange(4)) + b"hello", legacy=legacy)
        elif kind in (8, 9):  # CREATE2 + selfdestruct in the same tx, or create only
            skip_call = int(rng.random() < 0.3)
            tx = wallet.sign(factory, value=rng.choice((0, 11)),
                             data=word(rng.randrange(3)) + word(skip_call), legacy=legacy)
        else:  # call a child directly: selfdestruct of an older contract only moves value
            tx = wallet.sign(rng.choice(children), legacy=legacy)
        twins.apply(tx, primed_sender=wallet.address if rng.random() < 0.5 else None)
    return twins


# ------------------------------------------------------------------ differential


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_workloads_match_stock_py_evm_after_every_transaction(seed):
    twins = run_random_workload(seed, transactions=110)
    # The workload did what it claims: contracts with storage, deleted children, and
    # transfers to new accounts all happened.
    assert any(twins.flat._storage.values())
    assert len(twins.flat) > 10


def test_create2_and_selfdestruct_in_one_transaction_deletes_the_child():
    wallet = Wallet(7)
    twins = Twins({wallet.address: 10**21})
    factory = wallet.deploy(twins, deployer(FACTORY_RUNTIME))
    child = generate_safe_contract_address(factory, 1, CHILD_INIT)
    twins.apply(wallet.sign(factory, value=11, data=word(1) + word(0)))
    assert not twins.flat.account_exists(child)
    assert twins.flat.get_storage(factory, 6) == 1  # the call into the child succeeded
    assert twins.flat.get_balance(factory) == 11  # the child's endowment came back
    # Created but not called: the child lives, with its constructor's storage ...
    twins.apply(wallet.sign(factory, value=11, data=word(1) + word(1)))
    assert twins.flat.get_storage(child, 0) == 1
    # ... and a later selfdestruct only moves its balance (EIP-6780).
    twins.apply(wallet.sign(child))
    assert twins.flat.account_exists(child) and twins.flat.get_balance(child) == 0


def test_reverted_nested_call_leaves_no_trace_but_costs_the_same_gas():
    wallet = Wallet(8)
    twins = Twins({wallet.address: 10**21})
    store = wallet.deploy(twins, deployer(STORE_RUNTIME, STORE_CONSTRUCTOR))
    relay = wallet.deploy(twins, deployer(RELAY_RUNTIME))
    twins.apply(wallet.sign(relay, data=word(store) + word(0) + word(1) + word(99) + word(1)))
    assert twins.flat.get_storage(store, 1) == 0
    assert twins.flat.get_storage(relay, 7) == 0  # success flag 0 recorded
    top = twins.apply(wallet.sign(store, data=word(1) + word(99) + word(1)))
    assert top.is_error and twins.flat.get_storage(store, 1) == 0


def test_empty_account_touched_by_a_zero_value_transaction_is_not_created():
    wallet = Wallet(9)
    twins = Twins({wallet.address: 10**21})
    nobody = b"\x42" * 20
    twins.apply(wallet.sign(nobody, value=0, gas=21_000))
    assert not twins.flat.account_exists(nobody)
    twins.apply(wallet.sign(nobody, value=1, gas=21_000))
    assert twins.flat.get_balance(nobody) == 1


def test_invalid_transactions_are_rejected_by_both_and_change_nothing():
    wallet = Wallet(10)
    twins = Twins({wallet.address: 10**21})
    root = twins.flat.state_root()
    wallet.nonce = 5  # nonce too high
    tx = wallet.sign(b"\x01" * 20, value=1, gas=21_000)
    with pytest.raises(ValidationError):
        twins.stock.apply_transaction(tx)
    with pytest.raises(ValidationError):
        twins.blixt.apply_transaction(PragueTransactionBuilder.decode(tx.encode()))
    assert twins.flat.state_root() == root == twins.stock.make_state_root()


def test_a_primed_sender_is_used_without_recovering_the_signature():
    wallet, other = Wallet(11), Wallet(12)
    flat = FlatState()
    flat.set_balance(wallet.address, 10**21)
    flat.set_balance(other.address, 10**21)
    state = BlixtState(FlatAccountDB(flat), execution_context())
    tx = wallet.sign(b"\x01" * 20, value=5, gas=21_000)
    # Prime it with the *other* account: if py-evm recovered the sender (or checked
    # the signature against it) this would not run from `other`.
    prime_sender(tx, other.address)
    assert state.apply_transaction(tx).is_success
    assert flat.get_nonce(other.address) == 1 and flat.get_nonce(wallet.address) == 0
    assert flat.get_balance(other.address) < 10**21 - 5


# ------------------------------------------------------------------ FlatState


def snapshot(flat: FlatState):
    return list(flat.iter_accounts()), list(flat.iter_storage())


def random_write(flat: FlatState, rng: random.Random, addresses):
    address = rng.choice(addresses)
    op = rng.randrange(8)
    if op == 0:
        flat.set_balance(address, rng.randrange(10**20))
    elif op == 1:
        flat.set_nonce(address, rng.randrange(100))
    elif op in (2, 3):
        flat.set_storage(address, rng.randrange(6), rng.choice((0, 1, rng.randrange(2**256))))
    elif op == 4:
        flat.set_code(address, rng.randbytes(rng.randrange(0, 40)))
    elif op == 5:
        flat.delete_account(address)
    elif op == 6:
        flat.touch(address)
        flat.clear_storage(address)
    else:
        flat.touch(address)


def test_state_root_matches_py_evm_account_db_on_random_writes():
    rng = random.Random(5)
    reference = AccountDB(AtomicDB())
    flat = FlatState()
    addresses = [rng.randbytes(20) for _ in range(25)]
    for step in range(1500):
        address = rng.choice(addresses)
        op = rng.randrange(8)
        if op == 0:
            value = rng.randrange(10**20)
            reference.set_balance(address, value)
            flat.set_balance(address, value)
        elif op == 1:
            value = rng.randrange(100)
            reference.set_nonce(address, value)
            flat.set_nonce(address, value)
        elif op in (2, 3):
            slot, value = rng.randrange(6), rng.choice((0, 1, rng.randrange(2**256)))
            reference.set_storage(address, slot, value)
            flat.set_storage(address, slot, value)
        elif op == 4:
            code = rng.randbytes(rng.randrange(0, 40))
            reference.set_code(address, code)
            flat.set_code(address, code)
        elif op == 5:
            reference.delete_account(address)
            flat.delete_account(address)
        elif op == 6:
            reference.delete_storage(address)
            flat.touch(address)
            flat.clear_storage(address)
        else:
            reference.touch_account(address)
            flat.touch(address)
        if step % 5 == 0:
            assert flat.state_root() == reference.make_state_root(), step
    assert flat.state_root() == reference.make_state_root()


def test_nested_checkpoints_revert_and_commit_restore_exactly():
    rng = random.Random(6)
    flat = FlatState()
    addresses = [rng.randbytes(20) for _ in range(12)]
    for _ in range(200):
        random_write(flat, rng, addresses)
    for _ in range(60):
        # A stack of checkpoints; each level remembers the state it should revert to.
        stack = []
        for _depth in range(rng.randrange(1, 5)):
            stack.append((flat.checkpoint(), snapshot(flat), flat.state_root()))
            for _ in range(rng.randrange(0, 12)):
                random_write(flat, rng, addresses)
                if rng.random() < 0.1:
                    flat.state_root()  # computing a root mid-way must not break revert
        while stack:
            checkpoint, before, root = stack.pop()
            if rng.random() < 0.5:
                flat.revert(checkpoint)
                assert snapshot(flat) == before
                assert flat.state_root() == root
            else:
                flat.commit(checkpoint)
    assert flat.checkpoint_depth == 0 and not flat._undo


def test_revert_of_an_outer_checkpoint_undoes_committed_inner_writes():
    flat = FlatState()
    alice = b"\xaa" * 20
    flat.set_balance(alice, 10)
    flat.set_storage(alice, 1, 5)
    root = flat.state_root()
    outer = flat.checkpoint()
    inner = flat.checkpoint()
    flat.set_balance(alice, 20)
    flat.set_storage(alice, 1, 0)
    flat.delete_account(alice)
    flat.commit(inner)
    assert not flat.account_exists(alice)
    flat.revert(outer)
    assert flat.get_balance(alice) == 10 and flat.get_storage(alice, 1) == 5
    assert flat.state_root() == root
    with pytest.raises(KeyError):
        flat.revert(outer)


def test_writes_are_range_checked():
    flat = FlatState()
    with pytest.raises(ValueError):
        flat.set_balance(b"\x01" * 20, -1)
    with pytest.raises(ValueError):
        flat.set_nonce(b"\x01" * 20, 2**64)
    with pytest.raises(ValueError):
        flat.set_storage(b"\x01" * 20, 0, 2**256)
    assert not flat.account_exists(b"\x01" * 20)


def apply_changes(accounts: dict, storage: dict, changes):
    for address, record in changes.accounts:
        if record is None:
            accounts.pop(address, None)
        else:
            accounts[address] = record
    for address, slot, value in changes.storage:
        if value:
            storage[(address, slot)] = value
        else:
            storage.pop((address, slot), None)


def test_take_changes_replayed_on_a_loaded_copy_reproduces_state_and_root():
    rng = random.Random(8)
    flat = FlatState()
    addresses = [rng.randbytes(20) for _ in range(15)]
    persisted_accounts, persisted_storage, persisted_code = {}, {}, {}
    for round_number in range(40):
        checkpoint = flat.checkpoint() if rng.random() < 0.3 else None
        for _ in range(rng.randrange(1, 25)):
            random_write(flat, rng, addresses)
        if checkpoint is not None:
            (flat.revert if rng.random() < 0.5 else flat.commit)(checkpoint)
        # Roots and change-taking interleave in any order.
        if rng.random() < 0.5:
            flat.state_root()
        changes = flat.take_changes()
        assert list(changes.accounts) == sorted(changes.accounts, key=lambda item: item[0])
        assert list(changes.storage) == sorted(changes.storage)
        apply_changes(persisted_accounts, persisted_storage, changes)
        persisted_code.update(changes.code)
        assert sorted((a, *r) for a, r in persisted_accounts.items()) == list(flat.iter_accounts())
        assert sorted((a, s, v) for (a, s), v in persisted_storage.items()) == list(flat.iter_storage())
        if round_number % 10 == 9:
            loaded = FlatState.from_records(
                ((a, *r) for a, r in persisted_accounts.items()),
                ((a, s, v) for (a, s), v in persisted_storage.items()),
                persisted_code.items(),
            )
            assert loaded.state_root() == flat.state_root()
            assert not loaded.take_changes()
            for address in addresses:
                assert loaded.get_code(address) == flat.get_code(address)
    assert not flat.take_changes()


def test_take_changes_reports_a_second_write_after_a_report():
    flat = FlatState()
    alice = b"\xaa" * 20
    flat.set_balance(alice, 1)
    assert flat.take_changes().accounts == ((alice, AccountRecord(0, 1, EMPTY_CODE_HASH)),)
    flat.set_balance(alice, 2)
    assert flat.take_changes().accounts == ((alice, AccountRecord(0, 2, EMPTY_CODE_HASH)),)
    flat.state_root()
    assert not flat.take_changes()
    flat.set_storage(alice, 3, 4)
    flat.delete_account(alice)
    changes = flat.take_changes()
    assert changes.accounts == ((alice, None),)
    assert changes.storage == ((alice, 3, 0),)
    assert flat.state_root() == BLANK_ROOT


# ------------------------------------------------------------------ adapter


def test_adapter_warm_sets_revert_with_the_frame_and_reset_per_transaction():
    db = FlatAccountDB(FlatState())
    alice, bob = b"\xaa" * 20, b"\xbb" * 20
    db.mark_address_warm(alice)
    checkpoint = db.record()
    db.mark_address_warm(bob)
    db.mark_storage_warm(alice, 3)
    assert db.is_address_warm(bob) and db.is_storage_warm(alice, 3)
    db.discard(checkpoint)
    assert db.is_address_warm(alice)
    assert not db.is_address_warm(bob) and not db.is_storage_warm(alice, 3)
    db.lock_changes()
    assert not db.is_address_warm(alice)


def test_adapter_original_storage_is_the_value_at_transaction_start():
    db = FlatAccountDB(FlatState())
    alice = b"\xaa" * 20
    db.touch_account(alice)
    db.set_storage(alice, 1, 10)
    db.lock_changes()
    db.set_storage(alice, 1, 20)
    db.set_storage(alice, 1, 30)
    assert db.get_storage(alice, 1) == 30
    assert db.get_storage(alice, 1, from_journal=False) == 10
    db.delete_storage(alice)
    db.set_storage(alice, 1, 40)
    assert db.get_storage(alice, 1, from_journal=False) == 10
    assert db.get_storage(alice, 2, from_journal=False) == 0
    db.lock_changes()
    assert db.get_storage(alice, 1, from_journal=False) == 40


def test_adapter_state_root_is_cheap_and_only_moves_on_make_state_root():
    flat = FlatState()
    db = FlatAccountDB(flat)
    db.set_balance(b"\xaa" * 20, 1)
    assert db.state_root == BLANK_ROOT  # snapshot() reads this: no trie work
    root = db.make_state_root()
    assert root != BLANK_ROOT and db.state_root == root and db.has_root(root)


def test_adapter_existence_semantics_match_account_db():
    reference = AccountDB(AtomicDB())
    ours = FlatAccountDB(FlatState())
    touched, wiped, zeroed, decoded, read = (bytes([i]) * 20 for i in range(1, 6))
    for db in (reference, ours):
        db.touch_account(touched)
        db.delete_storage(wiped)  # CREATE2's wipe creates the account
        db.set_balance(zeroed, 0)
        db.delete_code(decoded)
        db.get_balance(read)  # reading creates nothing
    for address in (touched, wiped, zeroed, decoded, read):
        assert ours.account_exists(address) == reference.account_exists(address), address
        assert ours.account_is_empty(address) == reference.account_is_empty(address)
    assert ours.make_state_root() == reference.make_state_root()


def test_transient_storage_reverts_with_the_frame_like_py_evm():
    stock = PragueState(AtomicDB(), execution_context(), BLANK_ROOT_HASH)
    blixt = BlixtState(FlatAccountDB(FlatState()), execution_context())
    alice = b"\xaa" * 20
    seen = []
    for state in (stock, blixt):
        state.set_transient_storage(alice, 1, b"\x01")
        snapshot = state.snapshot()
        state.set_transient_storage(alice, 1, b"\x02")
        state.set_transient_storage(alice, 2, b"\x03")
        state.revert(snapshot)
        seen.append((state.get_transient_storage(alice, 1), state.get_transient_storage(alice, 2)))
        state.clear_transient_storage()
        seen.append(state.get_transient_storage(alice, 1))
    assert seen[0] == seen[2] == (b"\x01", b"")
    assert seen[1] == seen[3] == b""
