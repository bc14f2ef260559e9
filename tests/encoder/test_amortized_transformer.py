import itertools

import pytest
import torch

from espnet_amortized.encoder import AmortizedTransformerEncoder
from tests.conftest import randomize_arbitration, small_encoder

VARIANTS = list(
    itertools.product(["unit", "layer"], ["global", "local"], ["frame", "chunk"], [False, True])
)


def _batch(seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(3, 120, 80, generator=generator), torch.tensor([120, 90, 61])


def _valid(encoder, lengths, frames):
    out_lengths = torch.tensor([encoder.embed.num_output_frames(int(n)) for n in lengths])
    return torch.arange(frames).unsqueeze(0) < out_lengths.unsqueeze(1)


@pytest.mark.parametrize("gate_unit,arbitrator,decision_unit,kv_from_skipped", VARIANTS)
def test_sparse_execution_equals_dense_masked_execution(gate_unit, arbitrator, decision_unit, kv_from_skipped):
    torch.manual_seed(0)
    encoder = small_encoder(
        gate_unit=gate_unit, arbitrator=arbitrator, decision_unit=decision_unit, kv_from_skipped=kv_from_skipped
    )
    randomize_arbitration(encoder).eval()
    x, lengths = _batch()
    with torch.no_grad():
        sparse, sparse_lengths, info = encoder(x, lengths)
        sparse_gates = info.gates
        encoder.sparse_inference = False
        dense, dense_lengths, _ = encoder(x, lengths)
    valid = _valid(encoder, lengths, sparse.size(1))
    rate = float(sparse_gates[valid].mean())
    assert 0.1 < rate < 0.9, f"test needs a mix of executed and skipped units, got {rate}"
    assert torch.equal(sparse_lengths, dense_lengths)
    assert torch.allclose(sparse[valid], dense[valid], atol=1e-5)


def test_all_gates_off_returns_the_subsampled_input():
    encoder = small_encoder().eval()
    x, lengths = _batch()
    with torch.no_grad():
        masks = torch.ones(3, 1, 120, dtype=torch.bool)
        subsampled = encoder.after_norm(encoder.pos_enc(encoder.embed(x, masks)[0]))
        frames = subsampled.size(1)
        for sparse in (True, False):
            encoder.sparse_inference = sparse
            out, _, _ = encoder(x, lengths, forced_gates=torch.zeros(3, frames, 3, 2))
            valid = _valid(encoder, lengths, frames)
            assert torch.allclose(out[valid], subsampled[valid], atol=1e-6)


@pytest.mark.parametrize("sparse", [True, False])
def test_all_gates_on_equals_the_ungated_layers(sparse):
    torch.manual_seed(0)
    gated = small_encoder(gate_unit="unit").eval()
    dense = small_encoder(gate_unit="none").eval()
    missing, unexpected = dense.load_state_dict(gated.state_dict(), strict=False)
    assert not missing and all(key.startswith("arbitrator.") for key in unexpected)
    gated.sparse_inference = sparse
    x, lengths = _batch()
    with torch.no_grad():
        frames = dense(x, lengths)[0].size(1)
        expected, _, _ = dense(x, lengths)
        out, _, _ = gated(x, lengths, forced_gates=torch.ones(3, frames, 3, 2))
    valid = _valid(gated, lengths, frames)
    assert torch.allclose(out[valid], expected[valid], atol=1e-5)


def _streamed_and_full(encoder, x):
    frames = x.size(1)
    with torch.no_grad():
        full, _, _ = encoder(x, torch.full((x.size(0),), frames))
        state, pieces, start = encoder.init_state(), [], 0
        for size in (5, 13, 1, 30, 48):  # pieces unrelated to chunks or strides
            out, state = encoder.forward_chunk(x[:, start : start + size], state, is_final=start + size >= frames)
            pieces.append(out)
            start += size
    return torch.cat(pieces, dim=1), full


FRONT_ENDS = {
    "conv2d": {"input_layer": "conv2d"},
    "stack": {"input_layer": "stack"},
    "conv2d6": {"input_layer": "conv2d6"},
    "dw_striding": {"input_layer": "dw_striding", "subsampling_channels": 8},
    "dw_striding8k5": {
        "input_layer": "dw_striding", "subsampling_factor": 8, "subsampling_channels": 8, "subsampling_kernel_size": 5,
    },
}
DENSE = ("none", "global", "frame", False)
# Every gate variant with conv2d and stack; the front-end only feeds the layers, so the
# other front-ends run with a dense encoder and two gated variants.
STREAMING_CASES = [
    (variant, front_end) for front_end in ("conv2d", "stack") for variant in VARIANTS + [DENSE]
] + [
    (variant, front_end)
    for front_end in ("conv2d6", "dw_striding", "dw_striding8k5")
    for variant in (DENSE, ("unit", "global", "frame", False), ("unit", "local", "chunk", True))
]


# Batch 1 is one stream, batch 2 two streams of forward_streams: both must equal the full forward.
@pytest.mark.parametrize(
    "variant,front_end", STREAMING_CASES, ids=[f"{f}-{'-'.join(map(str, v))}" for v, f in STREAMING_CASES]
)
@pytest.mark.parametrize("batch", [1, 2])
def test_chunk_by_chunk_with_cache_equals_full_forward(variant, front_end, batch):
    gate_unit, arbitrator, decision_unit, kv_from_skipped = variant
    torch.manual_seed(0)
    encoder = small_encoder(
        gate_unit=gate_unit, arbitrator=arbitrator, decision_unit=decision_unit,
        kv_from_skipped=kv_from_skipped, **FRONT_ENDS[front_end],
    )
    randomize_arbitration(encoder).eval()
    streamed, full = _streamed_and_full(encoder, torch.randn(batch, 97, 80))
    assert streamed.shape == full.shape
    assert torch.allclose(streamed, full, atol=1e-5)


CONV_VARIANTS = [
    DENSE, ("unit", "global", "frame", False), ("unit", "local", "chunk", True),
    ("layer", "global", "frame", True), ("layer", "local", "frame", False),
]


@pytest.mark.parametrize("variant", CONV_VARIANTS, ids=["-".join(map(str, v)) for v in CONV_VARIANTS])
@pytest.mark.parametrize("batch", [1, 2])
def test_convolution_unit_streams_exactly(variant, batch):
    # The causal depthwise kernel (7 > chunk 4) reaches across chunk boundaries: the
    # cache of its last inputs must make chunk-by-chunk equal to the full forward.
    gate_unit, arbitrator, decision_unit, kv_from_skipped = variant
    torch.manual_seed(0)
    encoder = small_encoder(
        gate_unit=gate_unit, arbitrator=arbitrator, decision_unit=decision_unit,
        kv_from_skipped=kv_from_skipped, conv_kernel_size=7, **FRONT_ENDS["dw_striding"],
    )
    randomize_arbitration(encoder).eval()
    streamed, full = _streamed_and_full(encoder, torch.randn(batch, 97, 80))
    assert streamed.shape == full.shape
    assert torch.allclose(streamed, full, atol=1e-5)


def test_convolution_unit_with_batch_norm_streams_exactly():
    torch.manual_seed(0)
    encoder = small_encoder(gate_unit="none", conv_kernel_size=7, conv_norm_type="batch_norm")
    for layer in encoder.encoders:  # running statistics away from the identity
        layer.conv_norm.running_mean.normal_()
        layer.conv_norm.running_var.uniform_(0.5, 2.0)
    streamed, full = _streamed_and_full(encoder.eval(), torch.randn(2, 97, 80))
    assert torch.allclose(streamed, full, atol=1e-5)


def test_convolution_unit_is_causal_padding_free_and_sparse_equals_dense():
    torch.manual_seed(0)
    encoder = randomize_arbitration(small_encoder(conv_kernel_size=7)).eval()
    x, lengths = _batch()
    with torch.no_grad():
        batched, _, _ = encoder(x, lengths)
        alone, _, _ = encoder(x[2:, :61], lengths[2:])
        changed = x.clone()
        changed[:, 60:] = torch.randn_like(changed[:, 60:])
        future_changed, _, _ = encoder(changed, torch.full((3,), 120))
        unchanged, _, _ = encoder(x, torch.full((3,), 120))
        encoder.sparse_inference = False
        dense, _, _ = encoder(x, lengths)
    assert torch.allclose(batched[2, : alone.size(1)], alone[0], atol=1e-5)
    valid = _valid(encoder, lengths, batched.size(1))
    assert torch.allclose(batched[valid], dense[valid], atol=1e-5)
    # The first 3 chunks (12 frames, 48 input frames + the front-end's context) cannot see frame 60.
    assert torch.allclose(future_changed[:, :12], unchanged[:, :12], atol=1e-6)
    assert not torch.allclose(future_changed[:, 16:], unchanged[:, 16:], atol=1e-3)


@pytest.mark.parametrize("gate_unit", ["unit", "layer"])
@pytest.mark.parametrize("batch", [1, 2])
def test_gated_convolution_units_stream_exactly_and_sparse_equals_dense_masked(gate_unit, batch):
    """``gate_conv``: the pointwise layers on the executing rows only (sparse, streaming) equal the masked
    dense unit, chunk by chunk equals the whole utterance, and the units are really skipped on some frames."""
    torch.manual_seed(0)
    encoder = randomize_arbitration(small_encoder(
        gate_unit=gate_unit, conv_kernel_size=7, gate_conv=True, **FRONT_ENDS["dw_striding"])).eval()
    x = torch.randn(batch, 97, 80)
    streamed, full = _streamed_and_full(encoder, x)
    assert torch.allclose(streamed, full, atol=1e-5)
    lengths = torch.tensor([97, 70][:batch])
    with torch.no_grad():
        sparse, _, info = encoder(x, lengths)
        encoder.sparse_inference = False
        dense, _, _ = encoder(x, lengths)
    valid = _valid(encoder, lengths, sparse.size(1))
    assert info.gates.shape[-1] == 3 and 0.1 < float(info.gates[..., 2][valid].mean()) < 0.9
    assert torch.allclose(sparse[valid], dense[valid], atol=1e-5)


def test_gated_convolution_units_all_on_are_the_ungated_units_and_all_off_are_no_units():
    torch.manual_seed(0)
    gated = small_encoder(conv_kernel_size=5, gate_conv=True).eval()
    ungated, without = small_encoder(conv_kernel_size=5).eval(), small_encoder().eval()
    weights = {k: v for k, v in gated.state_dict().items() if not k.startswith("arbitrator.")}
    ungated.load_state_dict(weights, strict=False)
    without.load_state_dict({k: v for k, v in weights.items() if ".conv_" not in k}, strict=False)
    x, lengths = _batch()
    with torch.no_grad():
        frames = ungated(x, lengths)[0].size(1)
        valid = _valid(gated, lengths, frames)
        for sparse in (True, False):
            gated.sparse_inference = ungated.sparse_inference = without.sparse_inference = sparse
            on = torch.ones(3, frames, 3, 3)
            assert torch.allclose(gated(x, lengths, forced_gates=on)[0][valid],
                                  ungated(x, lengths, forced_gates=on[..., :2])[0][valid], atol=1e-5)
            conv_off = on.clone()
            conv_off[..., 2] = 0
            assert torch.allclose(gated(x, lengths, forced_gates=conv_off)[0][valid],
                                  without(x, lengths, forced_gates=on[..., :2])[0][valid], atol=1e-5)


def test_gated_convolution_units_train_their_gates_and_are_checked():
    torch.manual_seed(0)
    encoder = small_encoder(conv_kernel_size=5, gate_conv=True, gate_initial_logit=0.0).train()
    x, lengths = _batch()
    _, _, info = encoder(x, lengths)
    assert info.gates.shape[-1] == 3 and encoder.arbitrator.num_gates == 3 * 3
    conv_gates = info.gates[..., 2]
    conv_gates.retain_grad()
    out = encoder(x, lengths, forced_gates=None)[0]
    (out.sum() + conv_gates.sum()).backward()
    assert float(encoder.arbitrator.out.weight.grad.view(3, 3, -1)[:, 2].abs().sum()) > 0
    for options in (dict(), dict(conv_kernel_size=5, gate_unit="none"), dict(conv_kernel_size=5, arbitrator="local")):
        with pytest.raises(ValueError, match="gate_conv needs convolution units"):
            small_encoder(gate_conv=True, **options)


@pytest.mark.parametrize("conv_norm_type", ["layer_norm", "batch_norm"])
def test_convolution_unit_gets_gradients(conv_norm_type):
    torch.manual_seed(0)
    encoder = small_encoder(gate_unit="none", conv_kernel_size=5, conv_norm_type=conv_norm_type).train()
    x, lengths = _batch()
    out, _, _ = encoder(x, lengths)
    out.sum().backward()
    for layer in encoder.encoders:
        for module in (layer.conv_in, layer.conv_depthwise, layer.conv_norm, layer.conv_out):
            assert module.weight.grad is not None and float(module.weight.grad.abs().sum()) > 0


@pytest.mark.parametrize("left_chunks", [-1, 0, 1, 3])
@pytest.mark.parametrize("kv_from_skipped", [False, True])
@pytest.mark.parametrize("batch", [1, 2])
def test_streaming_cache_keeps_exactly_the_visible_left_chunks(left_chunks, kv_from_skipped, batch):
    torch.manual_seed(0)
    encoder = randomize_arbitration(small_encoder(left_chunks=left_chunks, kv_from_skipped=kv_from_skipped)).eval()
    x = torch.randn(batch, 97, 80)
    streamed, full = _streamed_and_full(encoder, x)
    assert torch.allclose(streamed, full, atol=1e-5)
    state = encoder.init_state()
    with torch.no_grad():
        for start in range(0, 97, 20):
            encoder.forward_chunk(x[:, start : start + 20], state)
            streams = state["streams"] if batch > 1 else [state]  # a batch streams one state per utterance
            assert len(streams) == batch
            for cache in (cache for stream in streams for cache in stream["kv"]):  # the chunks still visible
                assert left_chunks < 0 or len(cache.sizes) <= left_chunks + 1
                assert (0 if cache.key is None else cache.key.size(2)) == sum(cache.sizes)
                assert cache.key is None or cache.key.size(0) == 1  # one stream's keys, unpadded


def test_chunk_decisions_are_sampled_once_per_chunk_in_training():
    torch.manual_seed(0)
    encoder = randomize_arbitration(small_encoder(decision_unit="chunk", chunk_size=4)).train()
    x, lengths = _batch()
    _, _, info = encoder(x, lengths)
    gates, valid = info.gates, info.valid
    chunks = gates[:, : gates.size(1) // 4 * 4].unflatten(1, (-1, 4))  # (B, chunks, 4, L, 2)
    full_chunks = valid[:, : gates.size(1) // 4 * 4].unflatten(1, (-1, 4)).all(-1)
    same = (chunks == chunks[:, :, :1]).all(2).all(-1).all(-1)
    assert bool(same[full_chunks].all()), "frames of one chunk got different training samples"
    assert 0.0 < float(gates[valid].mean()) < 1.0


@pytest.mark.parametrize("front_end", sorted(FRONT_ENDS))
def test_batched_equals_alone_for_a_padded_utterance(front_end):
    torch.manual_seed(0)
    encoder = randomize_arbitration(small_encoder(**FRONT_ENDS[front_end])).eval()
    x, lengths = _batch()
    with torch.no_grad():
        batched, out_lengths, _ = encoder(x, lengths)
        alone, alone_lengths, _ = encoder(x[2:, :61], lengths[2:])
    assert out_lengths.tolist() == [encoder.embed.num_output_frames(int(n)) for n in lengths]
    assert batched.size(1) == encoder.embed.num_output_frames(x.size(1))
    assert int(out_lengths[2]) == int(alone_lengths[0]) == alone.size(1)
    assert torch.allclose(batched[2, : alone.size(1)], alone[0], atol=1e-5)


@pytest.mark.parametrize("gate_unit,arbitrator,decision_unit,kv_from_skipped", VARIANTS)
def test_training_forward_uses_hard_gates_and_reaches_the_arbitrator(gate_unit, arbitrator, decision_unit, kv_from_skipped):
    """Every variant trains: hard gates forward, gradients into its arbitration (global conv or local gates)."""
    torch.manual_seed(0)
    encoder = small_encoder(
        gate_initial_logit=0.0, gate_unit=gate_unit, arbitrator=arbitrator, decision_unit=decision_unit,
        kv_from_skipped=kv_from_skipped,
    ).train()
    x, lengths = _batch()
    out, _, info = encoder(x, lengths)
    gates, probs = info.gates, info.probs
    assert gates.shape == probs.shape == (3, out.size(1), 3, 2)
    assert set(gates.detach().unique().tolist()) <= {0.0, 1.0}
    (out.sum() + probs.sum()).backward()  # the task loss and the compute term both reach the arbitration
    if arbitrator == "global":
        assert encoder.arbitrator.out.weight.grad.abs().sum() > 0
    else:
        assert all(layer.local_gate.weight.grad.abs().sum() > 0 for layer in encoder.encoders)
    assert int(encoder.num_updates) == 0  # forwards do not count: optimizer updates do (tests/test_updates.py)


def test_threshold_moves_compute():
    torch.manual_seed(0)
    encoder = randomize_arbitration(small_encoder()).eval()
    x, lengths = _batch()
    rates = []
    for threshold in (0.2, 0.5, 0.8):
        encoder.gate_threshold = threshold
        with torch.no_grad():
            rates.append(float(encoder(x, lengths)[2].gates.mean()))
    assert rates[0] > rates[1] > rates[2]


@pytest.mark.parametrize(
    "option,value,message",
    [
        ("no_such_option", 1, "no_such_option"),
        ("chunk_size", 0, "chunk_size"),
        ("chunk_size", -4, "chunk_size"),
        ("left_chunks", -2, "left_chunks"),
        ("gate_threshold", 1.5, "gate_threshold"),
        ("gate_unit", "head", "gate_unit"),
        ("arbitrator", "oracle", "arbitrator"),
        ("decision_unit", "word", "decision_unit"),
        ("input_layer", "vgg", "input_layer"),
        ("subsampling_factor", 6, "subsampling_factor"),
        ("attention_heads", 5, "attention_heads"),
        ("conv_kernel_size", -1, "conv_kernel_size"),
        ("conv_norm_type", "group_norm", "conv_norm_type"),
        ("budget_min", 0.0, "budget_min"),
        ("budget_full_fraction", 1.5, "budget_full_fraction"),
        ("budget_min_fraction", -0.1, "budget_min_fraction"),
        ("budget_min_fraction", 0.8, "budget_min_fraction must be in \\[0, 1 - budget_full_fraction\\]"),
        ("budget_draw_power", 0.0, "budget_draw_power must be > 0"),
        ("compute_budget", 1.2, "compute_budget"),
        ("gate_logit_bound", -1.0, "gate_logit_bound"),
        ("gate_logit_bound_gradient", "outward", "gate_logit_bound_gradient"),
    ],
)
def test_bad_options_raise_value_errors_that_name_them(option, value, message):
    with pytest.raises(ValueError, match=message):
        AmortizedTransformerEncoder(80, output_size=32, **{option: value})


def test_gate_threshold_is_checked_when_set_after_construction():
    encoder = small_encoder()
    encoder.gate_threshold = 0.3
    assert encoder.gate_threshold == 0.3
    with pytest.raises(ValueError, match="gate_threshold"):
        encoder.gate_threshold = -0.1


def test_compute_budget_is_checked_when_set_and_needs_the_global_arbitrator():
    encoder = small_encoder(budget_conditioning=True)
    assert encoder.compute_budget is None  # unset: thresholds
    encoder.compute_budget = 0.35
    assert encoder.compute_budget == 0.35
    for bad in (-0.1, 1.01):
        with pytest.raises(ValueError, match="compute_budget must be in"):
            encoder.compute_budget = bad
    for options in (dict(arbitrator="local"), dict(gate_unit="none"), dict(decision_unit="chunk")):
        with pytest.raises(ValueError, match="compute_budget 0.5: the budget allocation needs gates decided per frame"):
            small_encoder(compute_budget=0.5, **options)
    for options in (dict(arbitrator="local"), dict(gate_unit="none")):
        with pytest.raises(ValueError, match="budget_conditioning needs the global arbitrator"):
            small_encoder(budget_conditioning=True, **options)


def test_training_draws_a_budget_per_utterance_and_inference_uses_compute_budget():
    torch.manual_seed(0)
    encoder = small_encoder(budget_conditioning=True, budget_min=0.3, budget_full_fraction=0.25).train()
    x, lengths = torch.randn(400, 40, 80), torch.full((400,), 40)
    budgets = encoder(x, lengths)[2].budgets
    full = budgets == 1.0
    assert budgets.shape == (400,) and 0.15 < float(full.float().mean()) < 0.35
    assert float(budgets.min()) >= 0.3 and 0.55 < float(budgets[~full].mean()) < 0.75  # uniform on [0.3, 1)
    assert not bool((budgets == 0.3).any())  # no sandwich by default
    encoder.eval()
    encoder.compute_budget = 0.4
    assert encoder(x[:2], lengths[:2])[2].budgets.tolist() == pytest.approx([0.4, 0.4])


def test_budget_min_fraction_trains_the_smallest_budget_in_every_batch():
    torch.manual_seed(0)
    encoder = small_encoder(budget_conditioning=True, budget_min=0.3, budget_full_fraction=0.25,
                            budget_min_fraction=0.25).train()
    x, lengths = torch.randn(400, 40, 80), torch.full((400,), 40)
    budgets = encoder(x, lengths)[2].budgets
    full, smallest = budgets == 1.0, (budgets - 0.3).abs() < 1e-6
    assert 0.15 < float(full.float().mean()) < 0.35 and 0.15 < float(smallest.float().mean()) < 0.35
    rest = budgets[~full & ~smallest]
    assert float(rest.min()) > 0.3 and float(rest.max()) < 1.0 and 0.55 < float(rest.mean()) < 0.75


@pytest.mark.parametrize("power, lower_half", [(1.0, 0.5), (2.0, 2 ** -0.5)])
def test_budget_draw_power_puts_more_of_the_draws_on_the_low_budgets(power, lower_half):
    torch.manual_seed(0)
    encoder = small_encoder(budget_conditioning=True, budget_min=0.25, budget_full_fraction=0.0,
                            budget_draw_power=power).train()
    budgets = encoder._budgets(20000, "cpu")
    assert float(budgets.min()) >= 0.25 and float(budgets.max()) < 1.0
    assert float((budgets < 0.625).float().mean()) == pytest.approx(lower_half, abs=0.015)


def test_budget_min_fraction_one_trains_every_utterance_at_budget_min():
    """A dedicated model trained by the budget model's allocation: one budget, drawn for every utterance."""
    torch.manual_seed(0)
    encoder = small_encoder(budget_conditioning=True, budget_training="allocate", budget_min=0.6,
                            budget_full_fraction=0.0, budget_min_fraction=1.0, compute_budget=0.6).train()
    x, lengths = torch.randn(64, 40, 80), torch.full((64,), 40)
    assert encoder(x, lengths)[2].budgets.tolist() == pytest.approx([0.6] * 64)
    encoder.eval()  # decoded at its one budget (its configured compute_budget)
    assert encoder(x[:2], lengths[:2])[2].budgets.tolist() == pytest.approx([0.6, 0.6])


@pytest.mark.parametrize("batch", [1, 2])
def test_budget_conditioned_encoder_streams_exactly_at_each_budget(batch):
    torch.manual_seed(0)
    encoder = randomize_arbitration(small_encoder(budget_conditioning=True)).eval()
    with torch.no_grad():
        torch.nn.init.normal_(encoder.arbitrator.budget_net[2].weight, std=3.0)
    x = torch.randn(batch, 97, 80)
    rates = []
    for budget in (0.3, 1.0):
        encoder.compute_budget = budget
        streamed, full = _streamed_and_full(encoder, x)
        assert torch.allclose(streamed, full, atol=1e-5)
        with torch.no_grad():
            rates.append(float(encoder(x, torch.full((batch,), x.size(1)))[2].gates.mean()))
    assert rates[0] != rates[1]  # the budget reaches the decisions


def test_budget_training_allocate_trains_on_the_decisions_inference_makes():
    """``budget_training: allocate``: each training utterance spends its drawn budget through the inference
    allocation (to a unit, above the always-run floor), with a gradient to the arbitrator; in eval without
    ``compute_budget`` everything runs (budget 1)."""
    from espnet_amortized.compute import count_macs

    torch.manual_seed(0)
    encoder = small_encoder(
        input_layer="stack", output_size=64, linear_units=256, arbitrator_hidden_size=8,
        budget_conditioning=True, budget_training="allocate").train()
    x, lengths = torch.randn(3, 400, 80), torch.tensor([400, 400, 400])
    budgets = torch.tensor([0.4, 0.7, 1.0])
    _, _, info = encoder(x, lengths, budgets=budgets)
    encoder.budget_noise = 0.0  # training ranks the logits themselves: the decisions of inference at each budget
    _, _, exact = encoder(x, lengths, budgets=budgets)
    encoder.eval()
    for index, budget in enumerate(budgets.tolist()):
        encoder.compute_budget = budget
        with torch.no_grad():
            inferred = encoder(x[index : index + 1], lengths[index : index + 1])[2].gates
        assert torch.equal(exact.gates[index : index + 1].detach(), inferred)
    encoder.compute_budget = None
    encoder.train()
    ratios = [count_macs(encoder, info.gates[i : i + 1].detach(), info.valid[i : i + 1], info.allowed[i : i + 1],
                         [400]).encoder_ratio for i in range(3)]
    assert ratios[0] == pytest.approx(0.4, abs=0.03) and ratios[1] == pytest.approx(0.7, abs=0.03) and ratios[2] > 1.0
    info.gates.sum().backward()
    assert float(encoder.arbitrator.out.weight.grad.abs().sum()) > 0
    encoder.eval()
    with torch.no_grad():
        gates = encoder(x, lengths)[2].gates
    assert bool((gates[_valid(encoder, lengths, gates.size(1))] == 1).all())


def test_budget_training_is_checked():
    with pytest.raises(ValueError, match="budget_training must be"):
        small_encoder(budget_conditioning=True, budget_training="topk")
    with pytest.raises(ValueError, match="budget_training 'allocate' needs budget_conditioning: true"):
        small_encoder(budget_training="allocate")
    with pytest.raises(ValueError, match="budget_training 'allocate' needs budget_conditioning: true"):
        small_encoder(budget_conditioning=True, budget_training="allocate", decision_unit="chunk")
    with pytest.raises(ValueError, match="budget_order must be one of 'logit', 'logit_per_mac', 'conv_first', got 'cost'"):
        small_encoder(budget_order="cost")
    with pytest.raises(ValueError, match="budget_order 'conv_first' .* needs gate_conv: true and gate_unit: unit; "
                       "got gate_conv False"):
        small_encoder(budget_order="conv_first", conv_kernel_size=3)
    with pytest.raises(ValueError, match="got gate_conv True, gate_unit 'layer'"):
        small_encoder(budget_order="conv_first", conv_kernel_size=3, gate_conv=True, gate_unit="layer")
    with pytest.raises(ValueError, match="budget_noise must be >= 0, got -0.5"):
        small_encoder(budget_noise=-0.5)


def _constant_logit_encoder(budget_order, logit):
    """A gated-convolution encoder (chunks of 16 frames) whose arbitrator gives every unit the same logit."""
    torch.manual_seed(0)
    encoder = small_encoder(input_layer="stack", output_size=64, linear_units=256, arbitrator_hidden_size=8,
                            conv_kernel_size=3, chunk_size=16, gate_conv=True, budget_order=budget_order).eval()
    with torch.no_grad():
        encoder.arbitrator.out.weight.zero_()
        encoder.arbitrator.out.bias.fill_(logit)
    return encoder


def test_budget_order_logit_per_mac_runs_the_cheapest_units_first_at_equal_logits():
    """At equal logits a small budget runs every convolution unit (the cheapest per frame), then MHSA, and
    no FFN (the dearest) under ``logit_per_mac``; ranked by logit alone ties go by position and FFNs run too.
    A large enough logit lead still wins over a unit's cost."""
    torch.manual_seed(0)
    x, lengths = torch.randn(2, 400, 80), torch.tensor([400, 400])
    shares = {}
    for order in ("logit", "logit_per_mac"):
        encoder = _constant_logit_encoder(order, 1.0)
        encoder.compute_budget = 0.3
        ratio, gates = _encoder_ratio(encoder, x, lengths)
        assert ratio == pytest.approx(0.3, abs=0.03)
        shares[order] = gates.mean(dim=(0, 1, 2)).tolist()  # (MHSA, FFN, conv) shares of frames x layers
        if order == "logit_per_mac":
            with torch.no_grad():  # the FFNs lead by more than log(FFN MACs / conv MACs)
                encoder.arbitrator.out.bias.view(-1, 3)[:, 1] = 1.0 + 3.0
            shares["ffn_lead"] = _encoder_ratio(encoder, x, lengths)[1].mean(dim=(0, 1, 2)).tolist()
    attention, ffn, conv = shares["logit_per_mac"]
    assert conv == 1.0 and 0.0 < attention < 1.0 and ffn == 0.0
    assert shares["logit"][1] > 0.1  # by position: the first layers' units, FFNs included
    assert shares["ffn_lead"][1] > 0.2 and shares["ffn_lead"][2] < conv


def test_budget_order_conv_first_runs_every_convolution_unit_before_any_other_unit():
    """Under ``conv_first`` the convolution units run first whatever their logits: with the lowest logits they
    all run at a budget above their cost, and below it only convolution units run, chosen by logit (the
    later layers', whose logits lead). Ranked by logit alone they are the units that never run."""
    torch.manual_seed(0)
    x, lengths = torch.randn(2, 400, 80), torch.tensor([400, 400])
    shares = {}
    for order in ("logit", "conv_first"):
        encoder = _constant_logit_encoder(order, 0.0)
        with torch.no_grad():
            bias = encoder.arbitrator.out.bias.view(-1, 3)  # (layers, (MHSA, FFN, conv))
            bias[:, :2] = 3.0
            bias[:, 2] = torch.linspace(-3.0, -2.0, bias.size(0))  # the last layer's convolution unit leads
        encoder.compute_budget = 0.35
        shares[order] = _encoder_ratio(encoder, x, lengths)[1].mean(dim=(0, 1))  # (layers, units)
    encoder.compute_budget = 0.0
    floor = _encoder_ratio(encoder, x, lengths)[0]  # what always runs
    attention, ffn, conv = shares["conv_first"].mean(0).tolist()
    assert conv == 1.0 and 0.0 < attention + ffn
    assert float(shares["logit"][:, 2].max()) == 0.0  # by logit the convolution units lose to every other
    # Just above the floor only some convolution units run, the later layers' first (their logits lead); in each
    # chunk (16 frames, all valid here) an MHSA or FFN runs only where every convolution unit runs.
    partial = []
    for step in range(1, 100):
        encoder.compute_budget = floor + 0.002 * step
        gates = _encoder_ratio(encoder, x, lengths)[1]
        share = gates.mean(dim=(0, 1))
        if 0.0 < float(share[:, 2].mean()) < 1.0:
            partial.append(share)
            for start in range(0, gates.size(1), 16):
                chunk = gates[:, start : start + 16]
                others_run = chunk[..., :2].flatten(1).amax(1) > 0
                assert bool((chunk[..., 2].flatten(1).amin(1)[others_run] == 1).all())
    assert len(partial) > 3
    for share in partial:
        assert share[:, 2].tolist() == sorted(share[:, 2].tolist())  # a later layer's unit never runs less
    assert any(float(share[-1, 2]) == 1.0 and float(share[0, 2]) == 0.0 for share in partial)


def test_bounded_logits_keep_every_unit_possible_and_its_gradient_alive():
    """Saturated logits (|logit| 20) give the compute term no gradient; bounded at 4 in the forward with an
    identity gradient, each unit runs with probability in [sigmoid(-4), sigmoid(4)] and the gradient stays."""
    torch.manual_seed(0)
    grads = {}
    for bound in (0.0, 4.0):
        encoder = small_encoder(gate_logit_bound=bound).train()
        with torch.no_grad():
            encoder.arbitrator.out.weight.zero_()
            encoder.arbitrator.out.bias.copy_(torch.tensor([20.0, -20.0] * 3))
        probs = encoder(torch.randn(2, 40, 80), torch.tensor([40, 40]))[2].probs
        probs.sum().backward()
        grads[bound] = float(encoder.arbitrator.out.bias.grad.abs().max())
        if bound:
            low, high = torch.sigmoid(torch.tensor(-bound)), torch.sigmoid(torch.tensor(bound))
            assert float(probs.min()) == pytest.approx(float(low)) and float(probs.max()) == pytest.approx(float(high))
    assert grads[0.0] < 1e-4 < grads[4.0]


def _encoder_ratio(encoder, x, lengths):
    """The whole-encoder compute ratio of an offline forward, and its gates."""
    from espnet_amortized.compute import count_macs

    with torch.no_grad():
        _, _, info = encoder(x, lengths)
    return count_macs(encoder, info.gates, info.valid, info.allowed, info.input_lengths.tolist()).encoder_ratio, info.gates


@pytest.mark.parametrize("conditioned,gate_unit,gate_conv,budget_order", [
    (False, "unit", False, "logit"), (True, "unit", False, "logit"), (False, "layer", False, "logit"),
    (True, "unit", True, "logit"), (False, "layer", True, "logit"), (True, "unit", True, "logit_per_mac"),
    (True, "unit", True, "conv_first"),
])
def test_compute_budget_lands_on_the_whole_encoder_ratio_and_is_monotone(conditioned, gate_unit, gate_conv, budget_order):
    """The per-chunk allocation spends the budget whatever the logits: within 0.03 of each request above the
    always-run floor (at or below it: only what always runs), monotone, and everything at 1. (Chunks of 16
    frames: a chunk may leave up to one unit of its budget unspent, a large share of a tiny chunk's.)"""
    torch.manual_seed(0)
    encoder = randomize_arbitration(small_encoder(
        input_layer="stack", output_size=64, linear_units=256, arbitrator_hidden_size=8, conv_kernel_size=3, chunk_size=16,
        gate_unit=gate_unit, budget_conditioning=conditioned, gate_conv=gate_conv, budget_order=budget_order)).eval()
    x, lengths = torch.randn(3, 400, 80), torch.tensor([400, 333, 150])
    encoder.compute_budget = 0.0
    floor, gates = _encoder_ratio(encoder, x, lengths)
    # gated convolution units: only the front-end, the depthwise convs and the arbitrator always run
    assert float(gates.sum()) == 0.0 and (0.02 < floor < 0.15 if gate_conv else 0.1 < floor < 0.3), floor
    ratios = []
    for budget in (floor / 2, 0.25, 0.35, 0.5, 0.7, 0.9, 1.0):
        encoder.compute_budget = budget
        ratio, gates = _encoder_ratio(encoder, x, lengths)
        ratios.append(ratio)
        assert ratios[-1] == pytest.approx(max(budget, floor), abs=0.03)
    assert ratios == sorted(ratios)
    assert bool((gates[_valid(encoder, lengths, gates.size(1))] == 1).all())  # budget 1: every unit runs


@pytest.mark.parametrize("batch,budget_order", [(1, "logit"), (2, "logit"), (2, "logit_per_mac"), (2, "conv_first")])
def test_compute_budget_streams_exactly(batch, budget_order):
    """Chunks are cut at absolute positions, so streaming allocates as the whole utterance does."""
    torch.manual_seed(0)
    conv = dict(conv_kernel_size=3, gate_conv=True) if budget_order == "conv_first" else {}
    encoder = randomize_arbitration(small_encoder(input_layer="stack", budget_order=budget_order, **conv)).eval()
    x = torch.randn(batch, 97, 80)
    for budget in (0.4, 0.7):
        encoder.compute_budget = budget
        streamed, full = _streamed_and_full(encoder, x)
        assert torch.allclose(streamed, full, atol=1e-5)


@pytest.mark.parametrize("arbitrator", ["global", "local"])
def test_the_gates_train_the_arbitration_but_not_the_features_it_reads(arbitrator):
    """The straight-through and compute gradients stop at the arbitration's input: the front-end and the layers
    are trained by the units' outputs only (on the bench the gates' gradient dominated what reached the front-end)."""
    torch.manual_seed(0)
    encoder = randomize_arbitration(small_encoder(arbitrator=arbitrator)).train()
    x, lengths = _batch()
    _, _, info = encoder(x, lengths)
    (info.probs.sum() + info.gates.sum()).backward()  # only through the decisions
    arbitration = encoder.arbitrator.parameters() if arbitrator == "global" else (
        p for layer in encoder.encoders for p in layer.local_gate.parameters())
    assert sum(float(p.grad.abs().sum()) for p in arbitration if p.grad is not None) > 0
    features = [p for p in encoder.embed.parameters()] + [
        p for layer in encoder.encoders for name, p in layer.named_parameters() if not name.startswith("local_gate")]
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0 for p in features)


def test_gate_warmup_runs_every_unit_in_training_until_its_last_update():
    torch.manual_seed(0)
    encoder = randomize_arbitration(small_encoder(gate_warmup_steps=3)).train()
    x, lengths = _batch()
    out, _, info = encoder(x, lengths)
    assert bool((info.gates[info.valid] == 1).all())
    out.sum().backward()
    assert encoder.arbitrator.out.weight.grad is None or float(encoder.arbitrator.out.weight.grad.abs().sum()) == 0
    for _ in range(3):
        encoder.count_update()
    _, _, info = encoder(x, lengths)
    assert 0.1 < float(info.gates[info.valid].mean()) < 0.9  # sampled from then on
    encoder.eval()
    encoder.num_updates.zero_()
    _, _, info = encoder(x, lengths)
    assert 0.1 < float(info.gates[info.valid].mean()) < 0.9  # inference never warms up
    with pytest.raises(ValueError, match="gate_warmup_steps must be >= 0"):
        small_encoder(gate_warmup_steps=-1)


FROZEN = {"attention": [1, 0, 0], "ffn": [0, 1, 1], "conv": [1, 1, 0]}


@pytest.mark.parametrize("arbitrator,gate_conv", [("global", True), ("global", False), ("local", False)])
def test_frozen_units_run_their_static_decisions_offline_and_streaming(arbitrator, gate_conv):
    torch.manual_seed(0)
    options = dict(conv_kernel_size=3, gate_conv=True) if gate_conv else {}
    encoder = randomize_arbitration(small_encoder(arbitrator=arbitrator, **options)).eval()
    frozen = {name: FROZEN[name] for name in encoder.unit_names}
    encoder.frozen_units = frozen
    assert encoder.frozen_units == frozen
    x, lengths = _batch()
    with torch.no_grad():
        out, _, info = encoder(x, lengths)
        valid = _valid(encoder, lengths, out.size(1))
        static = torch.tensor([frozen[name] for name in encoder.unit_names], dtype=torch.float).T  # (layers, units)
        assert torch.equal(info.gates[valid], static.expand(int(valid.sum()), -1, -1))
        assert torch.equal(info.gates[~valid], torch.zeros_like(info.gates[~valid]))
        encoder.frozen_units = None
        forced, _, _ = encoder(x, lengths, forced_gates=static.expand(3, out.size(1), -1, -1))
        assert torch.allclose(out[valid], forced[valid], atol=1e-6)
        encoder.frozen_units = frozen
    for batch in (1, 2):  # the single-utterance streaming path and the general one
        streamed, full = _streamed_and_full(encoder, x[:batch, :96])
        assert torch.allclose(streamed, full, atol=1e-5)


def test_frozen_units_are_ignored_in_training_and_checked_when_set():
    torch.manual_seed(0)
    encoder = randomize_arbitration(small_encoder())
    encoder.frozen_units = {"attention": [0, 0, 0], "ffn": [0, 0, 0]}
    x, lengths = _batch()
    assert float(encoder.train()(x, lengths)[2].gates.detach().sum()) > 0  # the arbitrator's sampled decisions
    assert float(encoder.eval()(x, lengths)[2].gates.sum()) == 0
    for bad, message in (
        ({"attention": [0, 0, 0]}, "frozen_units must map each of attention, ffn to one 0/1 per layer; got \\['attention'\\]"),
        ({"attention": [0, 0], "ffn": [0, 0, 0]}, "frozen_units\\['attention'\\] must be 3 values of 0 or 1"),
        ({"attention": [0, 0.5, 1], "ffn": [0, 0, 0]}, "frozen_units\\['attention'\\] must be 3 values of 0 or 1"),
        ([[0, 0, 0], [0, 0, 0]], "frozen_units must map each of attention, ffn .* got list"),
    ):
        with pytest.raises(ValueError, match=message):
            encoder.frozen_units = bad
    with pytest.raises(ValueError, match="frozen_units: this encoder has no gates"):
        small_encoder(gate_unit="none").frozen_units = {"attention": [1, 1, 1], "ffn": [1, 1, 1]}


def _streams_together(encoder, utterances, joins, piece_sizes):
    """Drive ``forward_streams`` with every stream at its own position: stream n joins at step joins[n], is fed
    pieces of its own sizes (cycled) and leaves after its last piece. Returns each stream's outputs and the
    largest number of streams that were advanced in one call."""
    states, outputs, fed = {}, {n: [] for n in range(len(utterances))}, [0] * len(utterances)
    step, most = 0, 0
    with torch.no_grad():
        while any(fed[n] < x.size(1) for n, x in enumerate(utterances)):
            active = [n for n, x in enumerate(utterances) if joins[n] <= step and fed[n] < x.size(1)]
            pieces, finals = [], []
            for n in active:
                states.setdefault(n, encoder.init_state())
                sizes = piece_sizes[n]
                size = sizes[step % len(sizes)]
                pieces.append(utterances[n][:, fed[n] : fed[n] + size])
                fed[n] += size
                finals.append(fed[n] >= utterances[n].size(1))
            most = max(most, len(active))
            for n, out in zip(active, encoder.forward_streams(pieces, [states[n] for n in active], finals)):
                outputs[n].append(out)
            step += 1
    return [torch.cat(outputs[n], dim=1) for n in range(len(utterances))], most


STREAM_CASES = {
    "dense": dict(gate_unit="none"),
    "unit-global-frame": {},
    "layer-local-chunk-kv": dict(gate_unit="layer", arbitrator="local", decision_unit="chunk", kv_from_skipped=True),
    "conv-gated-budget": dict(input_layer="stack", conv_kernel_size=3, gate_conv=True, budget_order="conv_first",
                              compute_budget=0.5),
    "budget-conditioned-allocate": dict(budget_conditioning=True, budget_training="allocate", compute_budget=0.4),
    "allocate-without-budget": dict(budget_conditioning=True, budget_training="allocate"),
    "all-left-chunks": dict(left_chunks=-1, conv_kernel_size=5),
}


@pytest.mark.parametrize("case", list(STREAM_CASES))
def test_streams_together_equal_each_stream_alone(case):
    """Streams that join and leave at different times, at different positions (the budget allocation's window
    grows over the first chunks) and fed in different pieces, advanced together: each stream's outputs are the
    whole-utterance forward of it alone."""
    torch.manual_seed(0)
    encoder = randomize_arbitration(small_encoder(**STREAM_CASES[case])).eval()
    if encoder.arbitrator is not None and encoder.arbitrator.budget_conditioned:
        with torch.no_grad():
            torch.nn.init.normal_(encoder.arbitrator.budget_net[2].weight, std=3.0)
    lengths = [97, 40, 63, 8, 120]
    utterances = [torch.randn(1, n, 80) for n in lengths]
    together, most = _streams_together(
        encoder, utterances, joins=[0, 0, 2, 3, 5], piece_sizes=[[5, 13, 1, 30], [16], [7, 9], [8], [50, 3]]
    )
    assert most >= 3
    for x, streamed in zip(utterances, together):
        with torch.no_grad():
            alone, _, _ = encoder(x, torch.tensor([x.size(1)]))
        assert streamed.shape == alone.shape
        assert torch.allclose(streamed, alone, atol=1e-5)


def test_forward_streams_checks_its_input():
    encoder = small_encoder().eval()
    state = encoder.init_state()
    with pytest.raises(ValueError, match="2 feature pieces, 1 states"):
        encoder.forward_streams([torch.randn(1, 9, 80)] * 2, [state], [False])
    with pytest.raises(ValueError, match=r"stream 0: features must be \(1, frames, 80\), got \(2, 9, 80\)"):
        encoder.forward_streams([torch.randn(2, 9, 80)], [state], [False])
    encoder.forward_streams([torch.randn(1, 9, 80)], [state], [True])
    with pytest.raises(ValueError, match="stream 0 already had its final piece"):
        encoder.forward_streams([torch.randn(1, 9, 80)], [state], [False])
    with pytest.raises(RuntimeError, match="encoder.eval"):
        encoder.train().forward_streams([torch.randn(1, 9, 80)], [encoder.init_state()], [False])


def test_forward_streams_checks_every_stream_before_changing_any():
    """A bad piece for one stream (wrong feature size) is refused before the other streams take theirs."""
    encoder = small_encoder().eval()
    good, bad = encoder.init_state(), encoder.init_state()
    with pytest.raises(ValueError, match=r"stream 1: features must be \(1, frames, 80\), got \(1, 9, 40\)"):
        encoder.forward_streams([torch.randn(1, 9, 80), torch.randn(1, 9, 40)], [good, bad], [False, False])
    assert good["feature_frames"] == 0 and not good["features"]
    gates = torch.ones(1, 3, 3, 2)  # decisions for 3 frames; the chunk ends at frame 4
    with pytest.raises(ValueError, match="forced_gates: stream 0 has decisions for fewer frames than its chunk"):
        encoder.forward_streams([torch.randn(1, 40, 80)], [encoder.init_state(forced_gates=gates)], [False])
    with pytest.raises(ValueError, match=r"forced_gates: streams \[1\] have none"):
        encoder.forward_streams([torch.randn(1, 40, 80)] * 2,
                                [encoder.init_state(forced_gates=torch.ones(1, 9, 3, 2)), encoder.init_state()],
                                [False, False])


@pytest.mark.parametrize("input_layer", ["conv2d", "conv2d6", "dw_striding", "stack"])
@pytest.mark.parametrize("chunk_size", [1, 3, 4])
def test_feature_frames_wanted_is_exactly_what_completes_the_next_chunk(input_layer, chunk_size):
    """Fed one feature frame at a time, a stream returns a chunk on exactly the call whose frame was the last
    one wanted: so holding features back until then changes neither outputs nor when they appear."""
    torch.manual_seed(0)
    encoder = small_encoder(input_layer=input_layer, chunk_size=chunk_size).eval()
    state, x = encoder.init_state(), torch.randn(1, 90, 80)
    chunks = 0
    for t in range(90):
        wanted = encoder.feature_frames_wanted(state)
        assert wanted >= 1  # a complete chunk never waits
        out, state = encoder.forward_chunk(x[:, t : t + 1], state)
        assert (out.size(1) > 0) == (wanted == 1), f"frame {t}: wanted {wanted}, got {out.size(1)} outputs"
        chunks += out.size(1) > 0
    assert chunks >= 3
