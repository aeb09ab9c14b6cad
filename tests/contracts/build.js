// Compiles the test contracts with solcjs (npm "solc") into artifacts.json.
// Usage: node tests/contracts/build.js   (with solc installed: npm install solc)
const fs = require("fs");
const path = require("path");
const solc = require("solc");
const dir = __dirname;
const sources = {};
for (const f of fs.readdirSync(dir).filter((f) => f.endsWith(".sol"))) {
  sources[f] = { content: fs.readFileSync(path.join(dir, f), "utf8") };
}
const input = {
  language: "Solidity",
  sources,
  settings: { optimizer: { enabled: true, runs: 200 }, evmVersion: "prague",
              outputSelection: { "*": { "*": ["abi", "evm.bytecode.object"] } } },
};
const out = JSON.parse(solc.compile(JSON.stringify(input)));
for (const e of out.errors || []) { if (e.severity === "error") { console.error(e.formattedMessage); process.exit(1); } }
const artifacts = { compiler: solc.version() };
for (const [file, contracts] of Object.entries(out.contracts)) {
  for (const [name, c] of Object.entries(contracts)) {
    artifacts[name] = { source: file, abi: c.abi, bytecode: "0x" + c.evm.bytecode.object };
  }
}
fs.writeFileSync(path.join(dir, "artifacts.json"), JSON.stringify(artifacts, null, 1) + "\n");
console.log("wrote artifacts.json with", Object.keys(artifacts).filter((k) => k !== "compiler"));
