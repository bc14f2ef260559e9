import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from espnet_amortized.compute import count_macs, expected_compute
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
    "dw_striding+gated_conv": {"input_layer": "dw_striding", "conv_kernel_size": 7, "gate_conv": True},
}


@pytest.mark.parametrize("front_end", sorted(FRONT_ENDS))
@pytest.mark.parametrize("arbitrator", ["global", "local"])
@pytest.mark.parametrize("chunk_size,left_chunks", [(256, -1), (8, 2)])
@pytest.mark.parametrize("sparse", [False, True])
def test_counter_agrees_with_torch_flop_counter_offline(front_end, arbitrator, chunk_size, left_chunks, sparse):
    # One chunk covering the utterance, or chunk windows: offline attention scores the windows only, plus
    # the zeros that pad the first chunks' windows and the last chunk (here 7 chunks: under 5% more, less as
    # utterances grow); the 2% is the front-ends' count, as before windows.
    if arbitrator == "local" and FRONT_ENDS[front_end].get("gate_conv"):
        pytest.skip("gate_conv needs the global arbitrator")
    encoder = small_encoder(**FRONT_ENDS[front_end], arbitrator=arbitrator, chunk_size=chunk_size,
                            left_chunks=left_chunks).eval()
    encoder.sparse_inference = sparse
    x, lengths = torch.randn(1, 200, 80), torch.tensor([200])
    with torch.no_grad():
        frames = encoder(x, lengths)[0].size(1)
    outputs = []
    forced = torch.ones(1, frames, 3, encoder.units_per_layer)
    measured = _flop_counter_macs(lambda: outputs.append(encoder(x, lengths, forced_gates=forced)))
    info = outputs[0][2]
    counted = count_macs(encoder, info.gates, info.valid, info.allowed, [200]).encoder
    assert counted * 0.98 <= measured <= counted * (1.02 if chunk_size > frames else 1.05)


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
    expected = expected_compute(encoder, probs, valid, allowed, [200])
    assert float(expected.layers) == pytest.approx(off.layer_ratio)
    assert float(expected.encoder) == pytest.approx(off.encoder_ratio)


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


@pytest.mark.parametrize("kv_from_skipped,gate_conv", [(False, False), (True, False), (False, True)])
def test_expected_ratio_matches_average_of_sampled_hard_ratios_per_utterance(kv_from_skipped, gate_conv):
    torch.manual_seed(0)
    encoder = small_encoder(kv_from_skipped=kv_from_skipped, conv_kernel_size=3 if gate_conv else 0, gate_conv=gate_conv)
    frames = 12
    probs = torch.rand(2, frames, 3, encoder.units_per_layer)
    valid = torch.ones(2, frames, dtype=torch.bool)
    valid[1, 8:] = False
    allowed = chunk_attention_mask(frames, 4, 1)
    lengths = [4 * frames + 3, 4 * 8 + 3]
    expected = expected_compute(encoder, probs, valid, allowed, lengths)
    assert expected.layers.shape == expected.encoder.shape == (2,)
    samples = {"layers": [], "encoder": []}
    for _ in range(400):
        gates = (torch.rand_like(probs) < probs).float()
        hard = expected_compute(encoder, gates, valid, allowed, lengths)
        for utterance in range(2):  # hard gates: exactly count_macs of that utterance alone
            length = int(valid[utterance].sum())
            alone = count_macs(encoder, gates[utterance : utterance + 1, :length], valid[utterance : utterance + 1, :length],
                               allowed[:length, :length], lengths[utterance : utterance + 1])
            assert float(hard.layers[utterance]) == pytest.approx(alone.layer_ratio)
            assert float(hard.encoder[utterance]) == pytest.approx(alone.encoder_ratio)
        samples["layers"].append(hard.layers)
        samples["encoder"].append(hard.encoder)
    for measure, values in samples.items():
        mean = torch.stack(values).mean(0)
        assert torch.allclose(expected.measure(measure), mean, atol=0.01), measure
    ones = expected_compute(encoder, torch.ones_like(probs), valid, allowed, lengths)
    arbitrator = ones.layers - 1.0  # all units on: the dense layers plus the arbitrator
    assert torch.all(arbitrator > 0)  # 25% in this tiny encoder
    with pytest.raises(ValueError, match="compute_measure"):
        expected.measure("flops")


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


@pytest.mark.parametrize("search_class", ["greedy", "beam"])
def test_search_counter_counts_prediction_and_joint_networks(search_class):
    """Prediction MACs = decoder rows x 4H(E + H) per LSTM layer (from the sizes, not the weights); joint
    MACs = what torch's flop counter counts for the search minus the prediction network's share."""
    from espnet2.asr.decoder.transducer_decoder import TransducerDecoder
    from espnet2.asr_transducer.joint_network import JointNetwork

    from espnet_amortized.compute import SearchMacCounter
    from espnet_amortized.search import BeamTransducerSearch, GreedyTransducerSearch

    torch.manual_seed(0)
    vocab, encoder_size, hidden, joint = 12, 8, 6, 7  # ESPnet embeds to hidden_size
    decoder = TransducerDecoder(vocab, hidden_size=hidden, num_layers=2).eval()
    joint_network = JointNetwork(vocab, encoder_size, hidden, joint_space_size=joint).eval()
    decoder.set_device(torch.device("cpu"))
    if search_class == "greedy":
        search = GreedyTransducerSearch(decoder, joint_network, blank_id=0, max_symbols_per_frame=2)
    else:
        search = BeamTransducerSearch(decoder, joint_network, blank_id=0, beam_size=3, max_symbols_per_frame=2)
    frames = torch.randn(9, encoder_size)
    rows = []
    original = decoder.rnn_forward
    decoder.rnn_forward = lambda embedded, state: rows.append(embedded.shape[0] * embedded.shape[1]) or original(embedded, state)
    with torch.no_grad(), SearchMacCounter(decoder, joint_network) as counter, FlopCounterMode(display=False) as flops:
        search.step(search.init_state(), frames)
    lstm_macs = 2 * 4 * hidden * (hidden + hidden)  # two layers, input and recurrent weights
    assert sum(rows) > 0
    assert counter.macs["prediction"] == pytest.approx(sum(rows) * lstm_macs)
    lstm_flops = sum(v for op, v in flops.get_flop_counts()["Global"].items() if "lstm" in str(op))
    assert counter.macs["joint"] > 0
    assert counter.macs["joint"] == pytest.approx((flops.get_total_flops() - lstm_flops) / 2)
    counter.reset()
    assert counter.as_dict() == {"macs_prediction": 0.0, "macs_joint": 0.0}
    search.step(search.init_state(), frames)  # detached: no longer counted
    assert counter.as_dict() == {"macs_prediction": 0.0, "macs_joint": 0.0}


def test_summary_splits_the_saving_into_static_and_dynamic_units():
    """Layer 1's MHSA never runs (static), layer 2's runs on half the frames (dynamic), the FFNs always run."""
    from espnet_amortized.compute import summarize_records

    torch.manual_seed(0)
    encoder = small_encoder(num_blocks=2).eval()
    frames = 24
    gates = torch.ones(1, frames, 2, 2)
    gates[0, :, 0, 0] = 0.0
    gates[0, ::2, 1, 0] = 0.0
    valid = torch.ones(1, frames, dtype=torch.bool)
    report = count_macs(encoder, gates, valid, chunk_attention_mask(frames, 4, 2), [100])
    summary = summarize_records([dict(report.as_dict(), seconds=1.0)], 1.0)
    assert summary["static_units"] == {"attention": ["never", None], "ffn": ["always", "always"]}
    static_saving = report.dense_attention[0] - report.attention[0]
    dynamic_saving = report.dense_attention[1] - report.attention[1]
    assert summary["saving_macs"] == pytest.approx(static_saving + dynamic_saving)
    assert summary["dynamic_saving_share"] == pytest.approx(dynamic_saving / (static_saving + dynamic_saving))
    assert 0.3 < summary["dynamic_saving_share"] < 0.7


def test_a_skipped_gated_convolution_unit_saves_its_pointwise_layers():
    encoder = small_encoder(num_blocks=2, conv_kernel_size=5, gate_conv=True)
    frames, d = 10, 32
    gates = torch.ones(1, frames, 2, 3)
    valid = torch.ones(1, frames, dtype=torch.bool)
    allowed = chunk_attention_mask(frames, 4, 1)
    full = count_macs(encoder, gates, valid, allowed, [44])
    gates[:, :4, 1, 2] = 0  # the second layer's convolution unit skips 4 frames
    report = count_macs(encoder, gates, valid, allowed, [44])
    assert full.layers == pytest.approx(full.dense_layers)
    assert full.dense_layers - report.layers == pytest.approx(4 * 3 * d * d)  # the depthwise conv still runs
    assert report.unit_rates["conv"] == [1.0, 0.6]
    assert report.as_dict()["macs_units"]["conv"] == [frames * 3 * d * d, 6 * 3 * d * d]
