"""Genesis: the dev accounts from the mnemonic, their balances, and block 0."""
from __future__ import annotations

from node.chain.blocks import BLANK_ROOT, Header, ZERO_HASH
from node.chain.state import FlatState
from node.config import WEI_PER_ETH, Config
from precompiles.exchange import DIGEST_SLOT, EXCHANGE_ADDRESS, EXCHANGE_CODE


def dev_accounts(mnemonic: str, count: int) -> list[tuple[bytes, bytes]]:
    """(address, private key) for m/44'/60'/0'/0/i, i < count — anvil's and hardhat's."""
    from eth_account import Account

    Account.enable_unaudited_hdwallet_features()
    out = []
    for i in range(count):
        acct = Account.from_mnemonic(mnemonic, account_path=f"m/44'/60'/0'/0/{i}")
        out.append((bytes.fromhex(acct.address[2:]), bytes(acct.key)))
    return out


def genesis_state(config: Config, accounts: list[tuple[bytes, bytes]], exchange_digest: bytes = b"") -> FlatState:
    state = FlatState()
    balance = config.accounts.balance_eth * WEI_PER_ETH
    for address, _key in accounts:
        state.set_balance(address, balance)
    # The exchange precompile's account: a nonce and a byte of code so that it is
    # never "empty" (EIP-161) and Solidity's extcodesize checks accept it.
    state.set_nonce(EXCHANGE_ADDRESS, 1)
    state.set_code(EXCHANGE_ADDRESS, EXCHANGE_CODE)
    if exchange_digest:
        state.set_storage(EXCHANGE_ADDRESS, DIGEST_SLOT, int.from_bytes(exchange_digest, "big"))
    return state


def genesis_header(config: Config, state: FlatState, timestamp: int) -> Header:
    h = Header()
    h.parent_hash = ZERO_HASH
    h.coinbase = bytes.fromhex(config.chain.coinbase[2:])
    h.state_root = state.state_root()
    h.tx_root = BLANK_ROOT
    h.receipt_root = BLANK_ROOT
    h.bloom = 0
    h.number = 0
    h.gas_limit = config.chain.gas_limit
    h.gas_used = 0
    h.timestamp = timestamp
    h.extra_data = b""
    h.mix_hash = ZERO_HASH
    h.base_fee = config.chain.initial_base_fee
    h.miniblock_count = 0
    h.size = 0
    h.seal()
    h.size = len(h.encode())
    return h
