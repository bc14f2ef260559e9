import pytest
import torch

from espnet_amortized.model import AmortizedESPnetASRModel
from tests.conftest import build_espnet_model

ENCODER = dict(output_size=32, attention_heads=4, linear_units=64, num_blocks=2, chunk_size=4,
               dropout_rate=0.0, gate_initial_logit=1.0)


def _toy_batch():
    generator = torch.Generator().manual_seed(1)
    speech = torch.randn(4, 120, 80, generator=generator)
    text = torch.randint(3, 24, (4, 6), generator=generator)
    return speech, torch.tensor([120, 110, 100, 90]), text, torch.tensor([6, 5, 4, 6])


def _expected_compute_over_steps(compute_weight, steps=6, **model_conf):
    torch.manual_seed(0)
    model = build_espnet_model(ENCODER, dict(compute_weight=compute_weight, ctc_weight=0.3, **model_conf))
    assert isinstance(model, AmortizedESPnetASRModel)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    speech, speech_lengths, text, text_lengths = _toy_batch()
    history = []
    for _ in range(steps):
        loss, stats, _ = model(speech, speech_lengths, text.clone(), text_lengths)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(float(stats["compute_expected"]))
    return model, history, stats


def test_stats_report_compute_terms():
    _, _, stats = _expected_compute_over_steps(0.5, steps=1)
    for key in ("loss", "loss_transducer", "loss_compute", "compute_expected", "compute_ratio", "compute_ratio_encoder"):
        assert key in stats and torch.isfinite(stats[key]).all(), key


def test_gradients_reach_the_arbitrator():
    torch.manual_seed(0)
    model = build_espnet_model(ENCODER, dict(compute_weight=0.0))
    loss, _, _ = model(*_toy_batch())
    loss.backward()
    assert model.encoder.arbitrator.out.weight.grad.abs().sum() > 0


def test_compute_weight_lowers_expected_compute_and_zero_weight_leaves_it():
    _, with_weight, _ = _expected_compute_over_steps(2.0)
    _, without, _ = _expected_compute_over_steps(0.0)
    assert with_weight[-1] < with_weight[0] - 0.1
    assert abs(without[-1] - without[0]) < 0.03


def test_warmup_keeps_the_weight_at_zero():
    _, history, _ = _expected_compute_over_steps(2.0, steps=4, compute_warmup_steps=100)
    assert abs(history[-1] - history[0]) < 0.03


def test_bad_model_options_fail_before_training():
    with pytest.raises(ValueError, match="compute_weight"):
        build_espnet_model(ENCODER, dict(compute_weight=-1.0))
    with pytest.raises(ValueError, match="compute_target"):
        build_espnet_model(ENCODER, dict(compute_regularizer="target", compute_target=0.0))


def test_stock_encoder_trains_through_the_amortized_model_unchanged():
    model = build_espnet_model(
        dict(output_size=32, attention_heads=4, linear_units=64, num_blocks=1), dict(compute_weight=0.5), encoder="transformer"
    )
    loss, stats, _ = model(*_toy_batch())
    assert torch.isfinite(loss).all() and "compute_ratio" not in stats


def test_validation_loss_is_the_asr_loss_and_training_adds_the_compute_term():
    torch.manual_seed(0)
    model = build_espnet_model(ENCODER, dict(compute_weight=2.0, ctc_weight=0.3))
    loss, stats, _ = model(*_toy_batch())
    assert float(loss) == pytest.approx(float(stats["loss_asr"] + 2.0 * stats["loss_compute"]), rel=1e-5)
    model.eval()
    with torch.no_grad():
        loss, stats, _ = model(*_toy_batch())
    assert float(stats["loss_compute"]) > 0.1  # still reported
    assert float(loss) == float(stats["loss_asr"]) == float(stats["loss"])


def _train_to_budget(target, initial_logit, steps=120):
    """The budget controller on the toy batch, with our optimizer hook; the executed compute of every update."""
    from espnet_amortized.updates import count_updates

    torch.manual_seed(0)
    encoder = dict(ENCODER, gate_initial_logit=initial_logit, arbitrator_hidden_size=8, temperature_anneal_steps=1)
    model = build_espnet_model(encoder, dict(compute_regularizer="budget", compute_target=target, ctc_weight=0.3,
                                             compute_multiplier_rate=0.5, compute_penalty=100.0))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    count_updates(model, optimizer)
    executed, multipliers = [], []
    for _ in range(steps):
        loss, stats, _ = model(*_toy_batch())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        executed.append(float(stats["compute_ratio"]))
        multipliers.append(float(model.compute_multiplier))
    return executed, multipliers


@pytest.mark.parametrize("target, initial_logit", [(0.5, 3.0), (0.6, -3.0)], ids=["from_above", "from_below"])
def test_budget_controller_lands_on_the_target_from_either_side(target, initial_logit):
    executed, multipliers = _train_to_budget(target, initial_logit)
    assert abs(executed[0] - target) > 0.3  # starts far away
    last = executed[-30:]
    assert abs(sum(last) / len(last) - target) < 0.06
    # the multiplier pushes down from above (positive) and up from below (negative)
    assert (multipliers[-1] > 0) == (initial_logit > 0)


def test_checkpoint_averaging_averages_the_counters_and_the_multiplier(tmp_path):
    from espnet2.main_funcs.average_nbest_models import average_nbest_models
    from espnet2.train.reporter import Reporter

    model = build_espnet_model(ENCODER, dict(compute_regularizer="budget", compute_target=0.5))
    reporter = Reporter()
    for epoch, (updates, multiplier) in enumerate([(100, 2.0), (200, 4.0)], start=1):
        reporter.set_epoch(epoch)
        with reporter.observe("valid") as sub:
            sub.register({"loss": 1.0 / epoch})
        model.num_updates.fill_(updates)
        model.encoder.num_updates.fill_(updates)
        model.compute_multiplier.fill_(multiplier)
        torch.save(model.state_dict(), tmp_path / f"{epoch}epoch.pth")
    average_nbest_models(tmp_path, reporter, [("valid", "loss", "min")], nbest=2)
    averaged = torch.load(tmp_path / "valid.loss.ave_2best.pth")
    assert float(averaged["num_updates"]) == float(averaged["encoder.num_updates"]) == 150.0
    assert float(averaged["compute_multiplier"]) == 3.0
    model.load_state_dict(averaged)  # and the averaged model loads


def test_budget_options_are_checked():
    with pytest.raises(ValueError, match="compute_multiplier_rate"):
        build_espnet_model(ENCODER, dict(compute_regularizer="budget", compute_multiplier_rate=-1.0))
    with pytest.raises(ValueError, match="compute_penalty"):
        build_espnet_model(ENCODER, dict(compute_regularizer="budget", compute_penalty=-1.0))
    with pytest.raises(ValueError, match="compute_measure"):
        build_espnet_model(ENCODER, dict(compute_measure="decoder"))


BUDGET_ENCODER = dict(ENCODER, gate_initial_logit=3.0, arbitrator_hidden_size=8, temperature_anneal_steps=1,
                      input_layer="stack", budget_conditioning=True, budget_min=0.5, budget_full_fraction=0.25)


def test_budget_bins_map_each_budget_and_the_full_budget_has_its_own():
    model = build_espnet_model(BUDGET_ENCODER, dict(compute_regularizer="budget", compute_measure="encoder",
                                                    compute_budget_bins=4))
    assert model.compute_multiplier.shape == (5,)
    bins = model.budget_bins(torch.tensor([0.5, 0.6249, 0.63, 0.99, 1.0]), 5, "cpu")
    assert bins.tolist() == [0, 0, 1, 3, 4]
    # one bin: the single-target Lagrangian, multiplier x mean + rho / 2 x mean^2
    single = build_espnet_model(ENCODER, dict(compute_regularizer="budget", compute_target=0.5, compute_weight=2.0,
                                              compute_penalty=10.0))
    regularizer = torch.tensor([0.1, -0.3, 0.4])
    term = single.compute_term(regularizer, torch.zeros(3, dtype=torch.long))
    assert float(term) == pytest.approx(2.0 * 0.2 / 3 + 5.0 * (0.2 / 3) ** 2)


def test_budget_conditioned_encoder_needs_the_budget_regulariser_on_the_encoder():
    for model_conf in (dict(compute_regularizer="target"), dict(compute_regularizer="budget", compute_measure="layers")):
        with pytest.raises(ValueError, match="budget-conditioned encoder"):
            build_espnet_model(BUDGET_ENCODER, model_conf)


def test_one_budget_conditioned_model_holds_each_budget_it_is_given():
    """Trained with budgets drawn per utterance, one multiplier per budget bin: the executed whole-encoder
    compute follows the budget input (sampled gates, as in training), and the decode-time knob is monotone."""
    from espnet_amortized.compute import count_macs
    from espnet_amortized.updates import count_updates

    torch.manual_seed(0)
    model = build_espnet_model(BUDGET_ENCODER, dict(compute_regularizer="budget", compute_measure="encoder",
                                                    ctc_weight=0.3, compute_budget_bins=2))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    count_updates(model, optimizer)
    speech, speech_lengths, text, text_lengths = _toy_batch()
    for _ in range(150):
        loss, _, _ = model(speech, speech_lengths, text.clone(), text_lengths)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def executed(budget, repeats):
        ratios = []
        for _ in range(repeats):
            with torch.no_grad():
                _, _, info = model.encoder(speech, speech_lengths, budgets=torch.full((4,), budget))
            ratios.append(count_macs(model.encoder, info.gates, info.valid, info.allowed,
                                     info.input_lengths.tolist()).encoder_ratio)
        return sum(ratios) / repeats

    for budget in (0.55, 0.7, 0.85):
        assert executed(budget, 5) == pytest.approx(budget, abs=0.06)
    model.eval()
    decoded = [executed(budget, 1) for budget in (0.55, 0.7, 0.85, 1.0)]
    assert decoded == sorted(decoded) and decoded[0] < decoded[-1] - 0.2


def test_budget_distillation_needs_a_budget_conditioned_encoder_and_a_ctc_head():
    budget_conf = dict(compute_regularizer="budget", compute_measure="encoder")
    with pytest.raises(ValueError, match="budget_distillation_weight must be >= 0"):
        build_espnet_model(BUDGET_ENCODER, dict(budget_conf, ctc_weight=0.3, budget_distillation_weight=-1.0))
    with pytest.raises(ValueError, match="budget_distillation_weight > 0 needs a budget-conditioned encoder"):
        build_espnet_model(ENCODER, dict(ctc_weight=0.3, budget_distillation_weight=1.0))
    with pytest.raises(ValueError, match="ctc_weight 0.0"):
        build_espnet_model(BUDGET_ENCODER, dict(budget_conf, ctc_weight=0.0, budget_distillation_weight=1.0))


def test_budget_distillation_teaches_the_drawn_budgets_from_the_full_model_without_training_the_teacher():
    """The loss adds weight x the mean per-utterance KL of the CTC posteriors (teacher: b = 1, no gradient);
    an utterance at b = 1 pays nothing, validation pays nothing, and the gradient of the term alone reaches
    the encoder only through the student's pass."""
    torch.manual_seed(0)
    encoder = dict(BUDGET_ENCODER, budget_training="allocate", positional_dropout_rate=0.0)  # same teacher twice
    model = build_espnet_model(encoder, dict(compute_regularizer="budget", compute_measure="encoder",
                                             compute_penalty=0.0, ctc_weight=0.3, budget_distillation_weight=2.0))
    speech, speech_lengths, text, text_lengths = _toy_batch()  # no frontend or normalize: the encoder's input
    budgets = torch.tensor([1.0, 0.5, 0.6, 1.0])
    with torch.no_grad():
        out, out_lengths, _ = model.encoder(speech, speech_lengths, budgets=budgets)
        kl = model.distillation(speech, speech_lengths, out, out_lengths)
    assert kl.shape == (4,)
    assert float(kl[0]) == pytest.approx(0.0, abs=1e-6) and float(kl[3]) == pytest.approx(0.0, abs=1e-6)
    assert float(kl[1]) > 0 and float(kl[2]) > 0

    loss, stats, _ = model(speech, speech_lengths, text.clone(), text_lengths)
    # the multipliers start at compute_weight 0 and the penalty is 0: the compute term is 0 here
    assert float(stats["loss_distillation"]) > 0
    assert float(loss) == pytest.approx(float(stats["loss_asr"] + 2.0 * stats["loss_distillation"]), rel=1e-6)
    model.zero_grad()
    out, out_lengths, _ = model.encoder(speech, speech_lengths, budgets=budgets)
    model.distillation(speech, speech_lengths, out, out_lengths).sum().backward()
    assert model.encoder.encoders[0].feed_forward.w_1.weight.grad.abs().sum() > 0  # through the student

    model.eval()
    _, stats, _ = model(speech, speech_lengths, text.clone(), text_lengths)
    assert "loss_distillation" not in stats


def _rank_takes_the_dual_step(rank, world, init_file, shares, out):
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        model = _budget_model_for_the_dual_step()
        if shares[rank] is not None:  # a rank whose share held no utterance still joins the sum
            model._violations_since_update.append(shares[rank])
        model.count_update()
        torch.save(model.compute_multiplier, out / f"rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def _budget_model_for_the_dual_step():
    torch.manual_seed(0)
    return build_espnet_model(BUDGET_ENCODER, dict(compute_regularizer="budget", compute_measure="encoder",
                                                   ctc_weight=0.3, compute_budget_bins=2, compute_multiplier_rate=0.5))


def test_the_dual_ascent_step_is_the_same_on_every_rank_and_is_the_whole_batch_step(tmp_path):
    """Three gloo ranks, two with unequal shares of the batch's bins and one with none: each takes the step one
    process takes on the whole batch (per-bin sums and counts over the ranks), not the step of its own share."""
    shares = [(torch.tensor([0.2, -0.1]), torch.tensor([0, 1])),
              (torch.tensor([0.4, 0.3, -0.3]), torch.tensor([0, 0, 2]))]
    torch.multiprocessing.start_processes(_rank_takes_the_dual_step, args=(3, tmp_path / "init", shares + [None], tmp_path),
                                          nprocs=3, start_method="fork")
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in (0, 1, 2)]
    whole = _budget_model_for_the_dual_step()
    whole._violations_since_update.append((torch.cat([v for v, _ in shares]), torch.cat([b for _, b in shares])))
    whole.count_update()
    alone = _budget_model_for_the_dual_step()
    alone._violations_since_update.append(shares[0])
    alone.count_update()
    assert torch.equal(ranks[0], ranks[1]) and torch.equal(ranks[0], ranks[2])
    torch.testing.assert_close(ranks[0], whole.compute_multiplier)
    # bin 0: (0.2 + 0.4 + 0.3) / 3 over the ranks, where rank 0 alone would step by 0.2
    assert float(ranks[0][0] - alone.compute_multiplier[0]) == pytest.approx(0.5 * (0.3 - 0.2))
