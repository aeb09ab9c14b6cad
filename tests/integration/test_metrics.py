"""/metrics on the RPC port: Prometheus text with the blixt_ series moving under load."""
from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families
from web3 import Web3

from tests.conftest import wait_until


def scrape(url: str) -> dict[str, float]:
    text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = sample.name + ("" if not sample.labels else str(sorted(sample.labels.items())))
            out[key] = sample.value
    return out


def test_metrics_count_transactions_blocks_and_rpc_calls(devnet_factory):
    node = devnet_factory("--block-time", "0.2")
    w3 = Web3(Web3.HTTPProvider(node.url))
    before = scrape(node.url)
    hashes = [w3.eth.send_transaction({"from": w3.eth.accounts[0], "to": w3.eth.accounts[1], "value": 1})
              for _ in range(3)]
    for h in hashes:
        w3.eth.wait_for_transaction_receipt(h, timeout=20)
    after = wait_until(lambda: (m := scrape(node.url))["blixt_blocks_total"] > before["blixt_blocks_total"] and m)
    assert after["blixt_transactions_total"] - before["blixt_transactions_total"] == 3
    assert after["blixt_miniblocks_total"] >= 1
    assert after["blixt_head_block_number"] >= 1
    assert after["blixt_preconfirmation_latency_seconds_count"] >= 1
    assert after["blixt_block_seal_seconds_count"] >= 1
    assert after["blixt_rpc_request_seconds_count[('method', 'eth_sendTransaction')]"] >= 3
    assert "blixt_mempool_transactions" in after and "blixt_store_write_seconds_count" in after
