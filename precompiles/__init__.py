"""precompiles - the EVM face of the exchange.

Responsible for: the exchange precompile at EXCHANGE_ADDRESS (0x…0800), its
Solidity interface (IExchange.sol and IExchange.abi.json, generated from the
engine's commands, results and events), calldata decoding, the gas schedule, EVM
logs, the revert mapping (ExchangeError(code, reason)), the read views served over
eth_call, and the `orders` workload of `blixt stress`.

Flow of one call::

    signed tx to 0x…0800 ─► node/chain/execution.py fast path ─┐
    contract CALL ─► py-evm ─► evm.exchange_precompile ────────┤
                                                               ▼
                     exchange.ExchangeRuntime.call(sender, value, calldata, gas, ctx)
                       selector ─► abi.Function.decode ─► exchange command
                       engine.checkpoint(); engine.apply(command, Context(block))
                       ├─ ExchangeError ─► revert data, engine.revert
                       └─ ok ─► gas = COMMAND_GAS + EVENT_GAS x events; logs; output;
                                undo journaled in the FlatState (add_undo), so an
                                enclosing revert rolls the engine back too
    end of tx: runtime.end_transaction() commits the engine checkpoints
    block open: runtime.begin_block(ctx)  (ExpireOrders, Tick)
    block seal: engine digest -> storage slot 0 of 0x…0800 (in the state root);
                engine bytes -> store key "E" in the same write batch

Modules:
    abi.py       the ABI derived from the engine's dataclasses; static word codec
    exchange.py  ExchangeRuntime (the one semantics), views, gas schedule, PlaceLimit
    evm.py       BlixtComputation: Prague's precompiles plus the exchange
    solidity.py  writes/checks IExchange.sol and IExchange.abi.json
    stress.py    the `orders` and `orderbook-sol` workloads of `blixt stress`

Errors: every rejection is a revert with ExchangeError(uint32 code, string reason),
code = exchange.Reason (stable); out of gas burns the call's gas like any EVM
out-of-gas; a static call or delegatecall of a state-changing function reverts.
"""
