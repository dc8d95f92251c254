import math

import numpy as np
import pytest

from autolrs.search import BayesianSearch


def _objective(lr, optimum=0.05):
    return (math.log10(lr) - math.log10(optimum)) ** 2


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_finds_the_minimum_of_a_known_function_within_budget(seed):
    search = BayesianSearch(1e-4, 1.0, kappa=2.0, seed=seed)
    for _ in range(10):
        lr = search.ask()
        search.tell(lr, _objective(lr))
    best_lr, best_value = search.best()
    assert abs(math.log10(best_lr) - math.log10(0.05)) < 0.15  # within 0.15 decades of 0.05
    assert best_value < 0.0225


def test_finds_the_minimum_under_noise():
    rng = np.random.default_rng(0)
    search = BayesianSearch(1e-4, 1.0, kappa=2.0, seed=0)
    for _ in range(12):
        lr = search.ask()
        search.tell(lr, _objective(lr, 0.01) + rng.normal(0, 0.05))
    x = np.linspace(0, 1, 201)
    search.fit()
    mu, _ = search.posterior(x)
    assert abs(math.log10(search.to_lr(x[np.argmin(mu)])) + 2.0) < 0.3


def test_never_reproposes_an_evaluated_lr():
    search = BayesianSearch(1e-3, 1.0, kappa=0.0, seed=0)
    seen = []
    for _ in range(15):
        lr = search.ask()
        assert all(abs(search.to_unit(lr) - search.to_unit(s)) > 0.019 for s in seen)
        seen.append(lr)
        search.tell(lr, 1.0)  # flat: pure exploitation would repeat itself


def test_same_seed_same_proposals_and_first_proposal_is_random():
    def run(seed):
        s = BayesianSearch(1e-3, 1.0, seed=seed)
        out = []
        for _ in range(6):
            lr = s.ask()
            out.append(lr)
            s.tell(lr, _objective(lr))
        return out

    assert run(3) == run(3)
    assert run(3)[0] != run(4)[0]


def test_first_lr_is_proposed_first():
    assert BayesianSearch(1e-3, 1.0, first_lr=0.02).ask() == 0.02
    # outside the range it is ignored
    assert BayesianSearch(1e-3, 0.01, first_lr=0.02, seed=0).ask() <= 0.01


def test_huge_kappa_spreads_candidates_over_the_range():
    s = BayesianSearch(1e-4, 1.0, kappa=1e6, seed=0)
    xs = []
    for _ in range(8):
        lr = s.ask()
        xs.append(s.to_unit(lr))
        s.tell(lr, _objective(lr))
    gaps = np.diff(np.sort([0.0, 1.0] + xs))
    assert gaps.max() < 0.25  # uncertainty sampling leaves no large hole


def test_divergence_is_worst_and_steers_away():
    s = BayesianSearch(1e-3, 1.0, kappa=2.0, seed=0)
    s.tell(1.0, float("nan"))
    s.tell(0.5, float("inf"))
    s.tell(0.01, 1.0)
    assert s.best() == (pytest.approx(0.01), 1.0)
    assert s.ask() < 0.5


def test_tell_rejects_lr_outside_range():
    with pytest.raises(ValueError, match="outside the search range"):
        BayesianSearch(1e-3, 1.0).tell(2.0, 1.0)


def test_initial_design_is_proposed_first_in_order_after_the_first_lr():
    search = BayesianSearch(1e-3, 1.0, seed=0, first_lr=0.05, initial=[1e-3, 0.03, 1.0, 5.0])
    asked = []
    for _ in range(5):
        lr = search.ask()
        asked.append(lr)
        search.tell(lr, (math.log10(lr) + 1.5) ** 2)
    assert asked[:4] == [0.05, 1e-3, 0.03, 1.0]  # 5.0 lies outside the range: dropped
    assert 1e-3 < asked[4] < 1.0 and asked[4] not in asked[:4]  # then the GP proposes
    state = search.state_dict()
    assert BayesianSearch.from_state_dict(state).initial == [1e-3, 0.03, 1.0]


def test_posterior_is_a_query_of_the_last_fit():
    search = BayesianSearch(1e-3, 1.0, kappa=2.0, seed=0)
    for lr, value in ((1e-3, 1.0), (1e-2, 0.5), (1e-1, 0.7)):
        search.tell(lr, value)
    with pytest.raises(RuntimeError, match="call fit"):
        search.posterior([0.5])  # never fitted
    search.fit()
    state = search.state_dict()
    mean, cov = search.posterior([0.2, 0.5], return_cov=True)
    assert search.state_dict() == state  # querying changed nothing
    np.testing.assert_array_equal(search.posterior([0.2, 0.5], return_cov=True)[1], cov)
    _, sd = search.posterior([0.2, 0.5])
    np.testing.assert_allclose(sd, np.sqrt(np.diag(cov)), rtol=1e-6, atol=1e-9)
    search.tell(1.0, 2.0)
    with pytest.raises(RuntimeError, match="call fit"):
        search.posterior([0.5])  # the fit no longer covers every observation


def _three_close_forecasts(noise):
    search = BayesianSearch(1e-4, 1.0, seed=0, noise=noise)
    for lr, y in ((1e-3, 0.50), (1e-2, 0.46), (1e-1, 0.52)):  # log-forecasts within ~6%: batch noise
        search.tell(lr, y)
    search.fit()
    return search, [search.to_unit(lr) for lr in (1e-3, 1e-2, 1e-1)]


def test_an_assumed_forecast_noise_keeps_the_gp_from_reading_noise_as_certain_differences():
    exact, x = _three_close_forecasts(0.0)
    mean, cov = exact.posterior(x, return_cov=True)
    gain = mean[0] - mean[1]  # how much 1e-2 beats 1e-3, in standard deviations of the difference
    assert gain / math.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]) > 3  # fitted exactly: "certain"
    noisy, x = _three_close_forecasts(0.1)
    mean, cov = noisy.posterior(x, return_cov=True)
    assert abs(mean[0] - mean[1]) <= 0.2 * abs(gain)  # a 10% error explains 4-6% differences
    assert abs(mean[0] - mean[1]) <= math.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])  # within one sd


def test_the_noise_is_part_of_the_state_and_older_states_load_without_it():
    search, x = _three_close_forecasts(0.1)
    state = search.state_dict()
    assert state["noise"] == 0.1
    rebuilt = BayesianSearch.from_state_dict(state)
    rebuilt.fit()
    np.testing.assert_allclose(rebuilt.posterior(x)[0], search.posterior(x)[0], rtol=1e-6)
    del state["noise"]  # saved before the option existed
    assert BayesianSearch.from_state_dict(state).noise == 0.0


@pytest.mark.parametrize("noise", [-0.1, math.inf, math.nan])
def test_a_bad_noise_is_refused(noise):
    with pytest.raises(ValueError, match="noise must be a finite standard deviation >= 0"):
        BayesianSearch(1e-4, 1.0, noise=noise)
