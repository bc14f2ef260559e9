import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from espnet_amortized.compute import count_macs, expected_layer_ratio
from espnet_amortized.encoder.masks import chunk_attention_mask
from tests.conftest import randomize_arbitration, small_encoder


def _flop_counter_macs(function):
    # The math SDPA kernel is made of bmm calls, which the flop counter sees
    # (it does not know the fused CPU attention kernel).
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        function()
    return counter.get_total_flops() / 2


FRONT_ENDS = {
    "conv2d": {"input_layer": "conv2d"},
    "conv2d6": {"input_layer": "conv2d6"},
    "stack": {"input_layer": "stack"},
    "dw_striding": {"input_layer": "dw_striding"},
    "dw_striding8": {"input_layer": "dw_striding", "subsampling_factor": 8, "subsampling_channels": 16},
    "dw_striding+conv": {"input_layer": "dw_striding", "conv_kernel_size": 7},
}


@pytest.mark.parametrize("front_end", sorted(FRONT_ENDS))
@pytest.mark.parametrize("arbitrator", ["global", "local"])
def test_counter_agrees_with_torch_flop_counter_on_the_dense_path(front_end, arbitrator):
    # Full context (one chunk covers the utterance): the dense path computes exactly the window.
    encoder = small_encoder(**FRONT_ENDS[front_end], arbitrator=arbitrator, chunk_size=256, left_chunks=-1).eval()
    encoder.sparse_inference = False
    x, lengths = torch.randn(1, 200, 80), torch.tensor([200])
    with torch.no_grad():
        frames = encoder(x, lengths)[0].size(1)
    measured = _flop_counter_macs(lambda: encoder(x, lengths, forced_gates=torch.ones(1, frames, 3, 2)))
    info = encoder.gate_info
    counted = count_macs(encoder, info.gates, info.valid, info.allowed, [200]).encoder
    assert counted == pytest.approx(measured, rel=0.02)


@pytest.mark.parametrize("gate_unit", ["none", "unit"])
def test_counter_counts_the_convolution_unit_as_torch_does(gate_unit):
    encoder = small_encoder(gate_unit=gate_unit, conv_kernel_size=5, chunk_size=256, left_chunks=-1).eval()
    encoder.sparse_inference = False
    x, lengths = torch.randn(1, 200, 80), torch.tensor([200])
    with torch.no_grad():
        frames = encoder(x, lengths)[0].size(1)
    forced = torch.ones(1, frames, 3, 2)
    measured = _flop_counter_macs(lambda: encoder(x, lengths, forced_gates=forced))
    valid = torch.ones(1, frames, dtype=torch.bool)
    allowed = chunk_attention_mask(frames, 256, -1)
    report = count_macs(encoder, forced, valid, allowed, [200])
    assert report.encoder == pytest.approx(measured, rel=0.02)
    # One unit alone, exactly: torch's count of its pointwise, depthwise and pointwise products.
    layer, d = encoder.encoders[0], encoder.output_size()
    unit_macs = _flop_counter_macs(lambda: layer.conv_dense(torch.randn(1, frames, d), valid))
    assert report.conv == pytest.approx(3 * unit_macs, rel=1e-9)
    # Always executed: the units' share is in the dense layers too, and all-off leaves only it.
    off = count_macs(encoder, torch.zeros_like(forced), valid, allowed, [200])
    assert off.layers == off.conv == report.conv
    assert off.layer_ratio == pytest.approx((report.conv + report.arbitrator) / report.dense_layers)
    probs = torch.zeros(1, frames, 3, 2)
    expected = float(expected_layer_ratio(encoder, probs, valid, allowed))
    assert expected == pytest.approx(report.conv / report.dense_layers)


STREAMING_CASES = [(False, "conv2d"), (True, "conv2d")] + [
    (False, name) for name in sorted(FRONT_ENDS) if name != "conv2d"
]


@pytest.mark.parametrize("kv_from_skipped,front_end", STREAMING_CASES)
def test_counter_agrees_with_flop_counter_on_the_sparse_streaming_path(kv_from_skipped, front_end):
    torch.manual_seed(0)
    encoder = randomize_arbitration(small_encoder(kv_from_skipped=kv_from_skipped, **FRONT_ENDS[front_end])).eval()
    length = 150 * encoder.embed.stride // 4  # ~37 subsampled frames whatever the stride
    x = torch.randn(1, length, 80)
    state = encoder.init_state()

    def stream():
        # Pieces unrelated to chunks: the subsampling re-reads the input frames that
        # consecutive chunks' windows share, and the counter must count them too.
        for start in range(0, length, 37):
            encoder.forward_chunk(x[:, start : start + 37], state, is_final=start + 37 >= length)

    measured = _flop_counter_macs(stream)
    gates = torch.cat(state["gates"], dim=1)
    frames = gates.size(1)
    report = count_macs(
        encoder, gates, torch.ones(1, frames, dtype=torch.bool),
        chunk_attention_mask(frames, encoder.chunk_size, encoder.left_chunks), state["input_frames"],
    )
    assert 0.2 < report.layers / report.dense_layers < 0.8
    assert report.encoder == pytest.approx(measured, rel=0.02)


def test_ratios_and_rates():
    encoder = small_encoder(num_blocks=2)
    frames = 10
    gates = torch.ones(1, frames, 2, 2)
    gates[:, :, 1, 1] = 0  # second FFN off
    valid = torch.ones(1, frames, dtype=torch.bool)
    allowed = chunk_attention_mask(frames, 4, 1)
    report = count_macs(encoder, gates, valid, allowed, [44])
    assert report.unit_rates == {"attention": [1.0, 1.0], "ffn": [1.0, 0.0]}
    assert report.ffn[1] == 0 and report.dense_ffn[1] == 2 * 32 * 64 * frames
    assert report.layers == pytest.approx(report.dense_layers - report.dense_ffn[1])
    assert report.layer_ratio == pytest.approx((report.layers + report.arbitrator) / report.dense_layers)
    assert report.encoder_ratio == pytest.approx(
        (report.subsampling + report.arbitrator + report.layers) / (report.subsampling + report.dense_layers)
    )
    assert report.gflops_per_second(1.0) == pytest.approx(2 * report.encoder / 1e9)


@pytest.mark.parametrize("kv_from_skipped", [False, True])
def test_expected_ratio_matches_average_of_sampled_hard_ratios(kv_from_skipped):
    torch.manual_seed(0)
    encoder = small_encoder(kv_from_skipped=kv_from_skipped)
    frames = 12
    probs = torch.rand(2, frames, 3, 2)
    valid = torch.ones(2, frames, dtype=torch.bool)
    valid[1, 8:] = False
    allowed = chunk_attention_mask(frames, 4, 1)
    expected = float(expected_layer_ratio(encoder, probs, valid, allowed))
    samples = []
    for _ in range(400):
        gates = (torch.rand_like(probs) < probs).float()
        report = count_macs(encoder, gates, valid, allowed, [0, 0])
        samples.append(report.layers / report.dense_layers)
    assert expected == pytest.approx(sum(samples) / len(samples), abs=0.01)
    assert expected_layer_ratio(encoder, torch.ones_like(probs), valid, allowed) == pytest.approx(1.0)


def test_summarize_records_weights_rates_by_frames():
    from espnet_amortized.compute import summarize_records

    records = [
        {"macs_encoder": 60.0, "macs_dense_encoder": 100.0, "macs_layers": 40.0, "macs_arbitrator": 2.0,
         "macs_dense_layers": 80.0, "frames": 10, "unit_rates": {"attention": [1.0], "ffn": [0.0]}},
        {"macs_encoder": 40.0, "macs_dense_encoder": 100.0, "macs_layers": 20.0, "macs_arbitrator": 2.0,
         "macs_dense_layers": 80.0, "frames": 30, "unit_rates": {"attention": [0.0], "ffn": [1.0]}},
    ]
    summary = summarize_records(records, audio_seconds=2.0)
    assert summary["compute_ratio_encoder"] == pytest.approx(0.5)
    assert summary["compute_ratio_layers"] == pytest.approx(64 / 160)
    assert summary["attention_rates"] == pytest.approx([0.25]) and summary["ffn_rates"] == pytest.approx([0.75])
    assert summary["gflops_per_second"] == pytest.approx(2 * 100 / 1e9 / 2.0)
    other = summarize_records([{"macs_encoder": 5.0, "macs_dense_encoder": 5.0}], 1.0)
    assert other["compute_ratio_layers"] == 1.0 and "attention_rates" not in other
