// Compiles OrderBook.sol with solcjs (npm "solc") into orderbook.json (abi + bytecode).
// Usage: NODE_PATH=/work/tools/node_modules node bench/contracts/build.js
// (or with solc installed next to it: npm install solc@0.8.37)
const fs = require("fs");
const path = require("path");
const solc = require("solc");
const dir = __dirname;
const input = {
  language: "Solidity",
  sources: { "OrderBook.sol": { content: fs.readFileSync(path.join(dir, "OrderBook.sol"), "utf8") } },
  // shanghai: runs on anvil, hardhat and Blixt alike (as node/stress/contracts).
  settings: { optimizer: { enabled: true, runs: 200 }, evmVersion: "shanghai",
              outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.methodIdentifiers"] } } },
};
const out = JSON.parse(solc.compile(JSON.stringify(input)));
for (const e of out.errors || []) {
  if (e.severity === "error") { console.error(e.formattedMessage); process.exit(1); }
  console.error(e.formattedMessage);
}
const c = out.contracts["OrderBook.sol"].OrderBook;
const artifact = {
  compiler: "solcjs " + solc.version(),
  settings: { optimizer: input.settings.optimizer, evmVersion: input.settings.evmVersion },
  contract: "OrderBook",
  abi: c.abi,
  methodIdentifiers: c.evm.methodIdentifiers,
  bytecode: "0x" + c.evm.bytecode.object,
};
fs.writeFileSync(path.join(dir, "orderbook.json"), JSON.stringify(artifact, null, 1) + "\n");
console.log("wrote orderbook.json:", c.evm.bytecode.object.length / 2, "bytes of init code");
