"""Tests for autoloss.tasks.noisy_digits: the noisy-label digits proxy task of the loss search."""

import json
import pickle

import pytest
import torch

from autoloss.errors import UserError
from autoloss.tasks import noisy_digits
from autoloss.tasks.noisy_digits import Diverged, NoisyDigitsTask, load_data

CE = "Neg(Dot(Y,Log(Softmax(X))))"
MAE = "Neg(Dot(Y,Softmax(X)))"  # robust to symmetric label noise
EXPLODING = "Neg(Dot(Y,Mul(Exp(Exp(X)),Exp(Exp(X)))))"  # overflows to inf * 0 = nan after a few steps


@pytest.fixture(scope="module")
def task():
    return NoisyDigitsTask()


@pytest.fixture(scope="module")
def ce_proxy(task):
    return task.evaluate(CE, "proxy", seed=0)


def test_data_split_and_noise():
    data = load_data(0.4, 0)
    assert len(data.x_train) + len(data.x_val) + len(data.x_test) == 1797
    assert len(data.x_test) == 540
    assert data.x_train.dtype == torch.float32 and 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0
    wrong = (data.y_train != data.y_train_clean).float().mean().item()
    assert 0.33 < wrong < 0.47
    assert len(data.x_verify) == 200
    assert load_data(0.4, 0) is data  # cached per process
    assert torch.equal(load_data(0.0, 0).y_train, data.y_train_clean)  # same split, no noise


def test_ce_proxy_is_deterministic_and_plausible(task, ce_proxy):
    again = task.evaluate(CE, "proxy", seed=0)
    assert again["fitness"] == ce_proxy["fitness"]
    assert again["final_loss"] == ce_proxy["final_loss"]
    assert 0.5 < ce_proxy["fitness"] < 0.95
    assert ce_proxy["stage"] == "proxy" and ce_proxy["steps"] == task.steps
    assert ce_proxy["seconds"] > 0


def test_behaviour_names_what_the_trained_model_predicts(task, ce_proxy):
    """Equal for the same training, and for a loss that differs only where the task feeds a constant (W = 1
    here), which trains the same model; another loss or seed trains another model."""
    assert ce_proxy["behaviour"] == task.evaluate(CE, "proxy", seed=0)["behaviour"]
    mos = task.evaluate(CE, "mos", seed=0)
    assert mos["behaviour"] == task.evaluate("Neg(Dot(Mul(Y,W),Log(Softmax(X))))", "mos", seed=0)["behaviour"]
    assert mos["behaviour"] != task.evaluate(MAE, "mos", seed=0)["behaviour"]
    assert mos["behaviour"] != task.evaluate(CE, "mos", seed=1)["behaviour"]
    assert isinstance(mos["behaviour"], str) and len(mos["behaviour"]) == 16


def test_robust_loss_beats_ce_under_label_noise(task, ce_proxy):
    # the headroom the search needs: CE memorises the noisy labels, the MAE-like loss does not
    robust = task.evaluate(MAE, "proxy", seed=0)
    assert robust["fitness"] > ce_proxy["fitness"] + 0.05


def test_mos_stage(task):
    result = task.evaluate(CE, "mos", seed=0)
    assert 0.0 <= result["fitness"] <= 1.0
    assert result["stage"] == "mos" and result["steps"] == task.mos_steps
    assert result["fitness"] > 0.5
    # a loss that pushes the model away from the labels scores at chance level
    assert task.evaluate("Dot(Y,Log(Softmax(X)))", "mos", seed=0)["fitness"] < 0.2


def test_diverging_loss_raises(task):
    with pytest.raises(Diverged, match=r"loss became nan at step \d+"):
        task.evaluate(EXPLODING, "proxy", seed=0)
    assert issubclass(Diverged, RuntimeError)


def test_invalid_loss_raises_at_step_zero(task):
    with pytest.raises(Diverged, match="at step 0"):
        task.evaluate("Dot(Y,Sqrt(Neg(Softmax(X))))", "mos", seed=0)


def test_round_trip_and_module_entry_point():
    task = NoisyDigitsTask(noise=0.2, steps=50, mos_steps=20, hidden=32, data_seed=3)
    as_json = json.loads(json.dumps(task.to_dict()))
    assert NoisyDigitsTask.from_dict(as_json) == task
    assert pickle.loads(pickle.dumps(noisy_digits.evaluate)) is noisy_digits.evaluate
    direct = task.evaluate("CEI", "mos", seed=1)
    via_dict = noisy_digits.evaluate(as_json, "CEI", "mos", 1)
    assert via_dict["fitness"] == direct["fitness"] and via_dict["final_loss"] == direct["final_loss"]
    with pytest.raises(UserError, match="unknown task field"):
        NoisyDigitsTask.from_dict({**as_json, "epochs": 3})


def test_bad_settings_are_rejected(task):
    with pytest.raises(UserError, match="classification space"):
        NoisyDigitsTask(space="reg")
    with pytest.raises(UserError, match="noise"):
        NoisyDigitsTask(noise=1.5)
    with pytest.raises(ValueError, match="unknown stage"):
        task.evaluate(CE, "full")


def test_caller_state_is_left_alone(task):
    threads = torch.get_num_threads()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    task.evaluate(CE, "mos", seed=0)
    assert torch.equal(torch.rand(3), expected)
    assert torch.get_num_threads() == threads


def test_sigmoid_space_with_fli():
    task = NoisyDigitsTask(space="cls_sigmoid")
    mos = task.evaluate("FLI", "mos", seed=0)
    assert 0.5 < mos["fitness"] <= 1.0
    proxy = task.evaluate("FLI", "proxy", seed=0)
    assert 0.5 < proxy["fitness"] <= 1.0


def test_confidence_stand_in_for_the_iou():
    # W = the detached probability of the label: CEI = -p.detach() * log p has the gradient of -p,
    # so it trains exactly like the MAE-like loss, while with W = 1 it is cross-entropy
    one, confidence = NoisyDigitsTask(steps=300), NoisyDigitsTask(steps=300, iou="confidence")
    assert one.evaluate("CEI", "proxy", seed=0)["fitness"] == one.evaluate(CE, "proxy", seed=0)["fitness"]
    cei = confidence.evaluate("CEI", "proxy", seed=0)
    assert cei["fitness"] == pytest.approx(confidence.evaluate(MAE, "proxy", seed=0)["fitness"], abs=0.004)
    assert cei["fitness"] != one.evaluate("CEI", "proxy", seed=0)["fitness"]
    sigmoid = NoisyDigitsTask(space="cls_sigmoid", steps=100, iou="confidence").evaluate("FLI", "proxy", seed=0)
    assert 0.1 < sigmoid["fitness"] <= 1.0
    with pytest.raises(UserError, match="iou must be one of one, confidence"):
        NoisyDigitsTask(iou="box")


def test_holdout_split_is_carved_out_of_the_test_split_only():
    plain, held = load_data(0.4, 0), load_data(0.4, 0, 0.4)
    assert len(held.x_holdout) == 216 and len(held.x_test) == 324 and len(plain.x_holdout) == 0
    assert torch.equal(held.x_train, plain.x_train) and torch.equal(held.y_train, plain.y_train)
    assert torch.equal(held.x_val, plain.x_val) and torch.equal(held.x_verify, plain.x_verify)
    together = torch.cat([held.x_test, held.x_holdout])
    assert sorted(map(tuple, together.tolist())) == sorted(map(tuple, plain.x_test.tolist()))
    assert torch.bincount(held.y_holdout, minlength=10).min() >= 20  # stratified


def test_test_stage_scores_the_held_out_split():
    task = NoisyDigitsTask(steps=60, holdout=0.4)
    result = task.evaluate(CE, "test", seed=5)
    assert result["stage"] == "test" and 0.1 < result["fitness"] <= 1.0
    assert task.evaluate(CE, "test", seed=5)["fitness"] == result["fitness"]
    with pytest.raises(ValueError, match="set holdout > 0"):
        NoisyDigitsTask(steps=60).evaluate(CE, "test", seed=5)


def test_mos_options_and_stored_settings():
    assert "holdout" not in NoisyDigitsTask().to_dict()  # a run stored before these options still resumes
    task = NoisyDigitsTask(mos_lr=0.02, verify_per_class=30, holdout=0.2)
    assert NoisyDigitsTask.from_dict(json.loads(json.dumps(task.to_dict()))) == task
    assert len(load_data(0.4, 0, 0.0, 30).x_verify) == 300
    slow, fast = NoisyDigitsTask(mos_steps=20), NoisyDigitsTask(mos_steps=20, mos_lr=0.05)
    assert slow.evaluate(CE, "mos", seed=0)["fitness"] != fast.evaluate(CE, "mos", seed=0)["fitness"]
    for bad in ({"mos_lr": 0}, {"holdout": 0.9}, {"verify_per_class": 0}, {"verify_per_class": 2.5}):
        with pytest.raises(UserError):
            NoisyDigitsTask(**bad)
