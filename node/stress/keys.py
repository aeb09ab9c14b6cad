"""Keys for a stress run: the node's dev accounts and the load senders.

Dev accounts come from the standard test mnemonic by BIP-39 / BIP-32
(m/44'/60'/0'/0/i), the same ten accounts anvil, hardhat and `blixt devnet` fund.
The derivation is done here with hashlib + coincurve rather than through
eth-account's "unaudited HD wallet" path so that the stress tester needs no test-time
dependency; tests/stress checks it against eth-account.

Load senders are derived from a seed string: key_i = keccak256(seed || i), so the same
seed gives the same senders on every run and every machine (a rerun against a node
that kept its state continues from the senders' current nonces).
"""

from __future__ import annotations

import hashlib
import hmac
import unicodedata
from dataclasses import dataclass

import coincurve
import sha3

STANDARD_MNEMONIC = "test test test test test test test test test test test junk"
DEFAULT_SEED = "blixt-stress"

# Order of the secp256k1 group: private keys live in [1, n).
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_HARDENED = 0x80000000


@dataclass(frozen=True, slots=True)
class Account:
    """A private key and the address it controls."""

    private_key: bytes
    address: bytes  # 20 bytes

    @property
    def address_hex(self) -> str:
        return "0x" + self.address.hex()


def keccak256(data: bytes) -> bytes:
    return sha3.keccak_256(data).digest()


def account_from_key(private_key: bytes) -> Account:
    public = coincurve.PublicKey.from_secret(private_key).format(compressed=False)
    return Account(private_key, keccak256(public[1:])[-20:])


def dev_accounts(count: int = 10, mnemonic: str = STANDARD_MNEMONIC, passphrase: str = "") -> list[Account]:
    """The first `count` accounts of m/44'/60'/0'/0/i for `mnemonic`."""
    seed = _bip39_seed(mnemonic, passphrase)
    key, chain = _bip32_master(seed)
    for index in (44 | _HARDENED, 60 | _HARDENED, 0 | _HARDENED, 0):
        key, chain = _bip32_child(key, chain, index)
    return [account_from_key(_bip32_child(key, chain, i)[0]) for i in range(count)]


def derived_senders(count: int, seed: str = DEFAULT_SEED) -> list[Account]:
    """`count` deterministic load-sender accounts for `seed`."""
    prefix = seed.encode()
    senders = []
    i = 0
    while len(senders) < count:
        key = keccak256(prefix + i.to_bytes(8, "big"))
        i += 1
        # A keccak output outside [1, n) is not a key; the chance is ~2^-128, but a
        # skipped index keeps the sequence deterministic either way.
        if 0 < int.from_bytes(key, "big") < SECP256K1_N:
            senders.append(account_from_key(key))
    return senders


def _bip39_seed(mnemonic: str, passphrase: str) -> bytes:
    words = unicodedata.normalize("NFKD", " ".join(mnemonic.split())).encode()
    salt = unicodedata.normalize("NFKD", "mnemonic" + passphrase).encode()
    return hashlib.pbkdf2_hmac("sha512", words, salt, 2048)


def _bip32_master(seed: bytes) -> tuple[bytes, bytes]:
    digest = hmac.new(b"Bitcoin seed", seed, hashlib.sha512).digest()
    return digest[:32], digest[32:]


def _bip32_child(key: bytes, chain: bytes, index: int) -> tuple[bytes, bytes]:
    if index & _HARDENED:
        data = b"\x00" + key + index.to_bytes(4, "big")
    else:
        data = coincurve.PublicKey.from_secret(key).format(compressed=True) + index.to_bytes(4, "big")
    digest = hmac.new(chain, data, hashlib.sha512).digest()
    child = (int.from_bytes(digest[:32], "big") + int.from_bytes(key, "big")) % SECP256K1_N
    return child.to_bytes(32, "big"), digest[32:]
