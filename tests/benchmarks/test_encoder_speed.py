"""The benchmark script runs and writes its JSON (no timing assertions: speed lives in RESULTS.md)."""

import json

from espnet_amortized.benchmarks import encoder_speed


def test_benchmark_writes_rows_for_every_setting(tmp_path, capsys):
    output = tmp_path / "speed.json"
    encoder_speed.main(
        ["--num_blocks", "2", "--output_size", "32", "--linear_units", "64", "--seconds", "1",
         "--rates", "1.0", "0.4", "--repeats", "1", "--output", str(output)]
    )
    result = json.loads(output.read_text())
    rows = result["rows"]
    assert len(rows) == 2 * 2 * 2  # input layers x modes x rates
    assert {row["mode"] for row in rows} == {"offline", "streaming"}
    for row in rows:
        assert row["dense_s"] > 0 and row["amortized_s"] > 0
    by_rate = {row["rate"]: row["mac_ratio_layers"] for row in rows if row["input_layer"] == "stack" and row["mode"] == "offline"}
    assert by_rate[0.4] < by_rate[1.0]
    assert "speedup" in capsys.readouterr().out


def test_forced_gates_execute_the_requested_fraction():
    import torch

    gates = encoder_speed.forced_gates(50, 3, 0.4, torch.Generator().manual_seed(0))
    assert gates.shape == (1, 50, 3, 2)
    assert torch.all(gates.sum(dim=1) == 20)
