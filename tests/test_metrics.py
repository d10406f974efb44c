"""Discrimination, perturbed-centroid and energy-distance metrics against hand computations,
brute-force loops and scipy."""
import warnings

import numpy as np
import pytest
from scipy.spatial.distance import cosine, euclidean
from scipy.stats import energy_distance as scipy_energy_distance
from scipy.stats import pearsonr

from xtcdr import evaluate as ev
from xtcdr import metrics as m


def test_metric_functions_are_re_exported_by_evaluate():
    for name in ("r2", "explained_variance", "pearson", "spearman"):
        assert getattr(ev, name) is getattr(m, name)
    from xtcdr.evaluate import r2  # noqa: F401  (the old import path keeps working)


# ----------------------------------------------------------------------------- rank metric
def brute_force_ranks(predicted, observed, genes, distance, anchor):
    """The definition, one comparison at a time, with scipy's distances."""
    dist = {"cosine": cosine, "euclidean": euclidean}[distance]
    n = len(predicted)
    out = []
    for i in range(n):
        g = genes[i]
        if anchor == "prediction":   # other observed profiles closer to p_i than o_i is
            own = dist(predicted[i][g], observed[i][g])
            others = [dist(predicted[i][g], observed[j][g]) for j in range(n) if j != i]
        else:                        # other predictions closer to o_i than p_i is
            own = dist(predicted[i][g], observed[i][g])
            others = [dist(predicted[j][g], observed[i][g]) for j in range(n) if j != i]
        out.append((sum(d < own for d in others) + 0.5 * sum(d == own for d in others)) / (n - 1))
    return np.array(out)


def test_rank_on_a_hand_example():
    observed = np.array([[1.0, 0.1, 0.1], [0.1, 1.0, 0.1], [0.1, 0.1, 1.0], [1.0, 1.0, 0.1]])
    predicted = np.array([[0.9, 0.1, 0.1],    # nearest its own o_0
                          [1.0, 0.2, 0.1],    # nearer o_0 and o_3 than its own o_1
                          [0.0, 0.1, 1.0],    # nearest its own o_2
                          [0.0, 1.0, 0.1]])   # nearer o_1 than o_3
    # by hand (prediction anchor, cosine): p_1 is nearer o_0 and o_3 than o_1 -> 2/3;
    # p_3 is nearer o_1 only -> 1/3; p_0 and p_2 -> 0
    np.testing.assert_allclose(m.discrimination_ranks(predicted, observed), [0, 2 / 3, 0, 1 / 3])
    every = [np.arange(3)] * 4
    subsets = [np.array([0, 1]), np.array([1, 2]), np.array([0, 2]), np.array([0, 1, 2])]
    for genes in (every, subsets):
        for distance in ("cosine", "euclidean"):
            for anchor in ("prediction", "observed"):
                np.testing.assert_allclose(
                    m.discrimination_ranks(predicted, observed, genes=genes, distance=distance, anchor=anchor),
                    brute_force_ranks(predicted, observed, genes, distance, anchor),
                    err_msg=f"{distance}, {anchor}")


@pytest.mark.parametrize("seed", range(3))
def test_rank_agrees_with_brute_force_on_random_data(seed):
    rng = np.random.default_rng(seed)
    observed = rng.normal(size=(12, 30))
    predicted = observed + rng.normal(scale=1.5, size=observed.shape)
    genes = [rng.choice(30, 8, replace=False) for _ in range(12)]
    for anchor in ("prediction", "observed"):
        np.testing.assert_allclose(
            m.discrimination_ranks(predicted, observed, genes=genes, anchor=anchor),
            brute_force_ranks(predicted, observed, genes, "cosine", anchor))


def test_rank_observed_anchor_is_perturbench_rank_helper_rescaled():
    # PerturBench's rank_helper: for each observed profile, sort the predictions by distance and
    # take the 0-based position of the condition's own prediction, divided by n
    rng = np.random.default_rng(4)
    observed = rng.normal(size=(9, 20))
    predicted = observed + rng.normal(size=observed.shape)
    n = len(observed)
    positions = []
    for i in range(n):
        d = np.array([cosine(predicted[j], observed[i]) for j in range(n)])
        positions.append(np.flatnonzero(np.argsort(d) == i)[0] / n)
    ours = m.discrimination_ranks(predicted, observed, anchor="observed")
    np.testing.assert_allclose(ours * (n - 1) / n, positions)


def test_perfect_predictor_ranks_zero_and_constant_predictor_about_half():
    rng = np.random.default_rng(0)
    observed = rng.normal(size=(200, 50))
    for anchor in ("prediction", "observed"):
        assert (m.discrimination_ranks(observed, observed, anchor=anchor) == 0).all()
    constant = np.tile(rng.normal(size=50), (200, 1))          # the same profile for every condition
    for anchor in ("prediction", "observed"):
        assert abs(np.mean(m.discrimination_ranks(constant, observed, anchor=anchor)) - 0.5) < 0.05
    unrelated = rng.normal(size=observed.shape)                # predictions that ignore the condition
    assert abs(np.mean(m.discrimination_ranks(unrelated, observed)) - 0.5) < 0.05
    # a prediction with no delta (the control baseline) ties with every condition
    zero = np.zeros_like(observed) + 1e-14 * rng.normal(size=observed.shape)
    np.testing.assert_array_equal(m.discrimination_ranks(zero, observed), 0.5)


def test_rank_edge_cases():
    one = np.ones((1, 4))
    assert np.isnan(m.discrimination_ranks(one, one)).all()            # fewer than 2 conditions
    assert np.isnan(m.centroid_accuracy(one, one)).all()
    two = np.array([[1.0, 0.0, 2.0], [0.0, 1.0, 1.0]])
    ranks = m.discrimination_ranks(two, two, genes=[np.array([0]), np.array([0, 1])])
    assert np.isnan(ranks[0]) and ranks[1] == 0                       # fewer than 2 genes: NaN
    with pytest.raises(ValueError, match="same shape"):
        m.discrimination_ranks(two, two[:, :2])
    with pytest.raises(ValueError, match="one index array per condition"):
        m.discrimination_ranks(two, two, genes=[np.arange(3)])
    with pytest.raises(ValueError, match="anchor"):
        m.discrimination_ranks(two, two, anchor="both")
    with pytest.raises(ValueError, match="distance"):
        m.discrimination_ranks(two, two, distance="manhattan")


# ----------------------------------------------------------------------------- centroid accuracy
def test_centroid_accuracy_on_a_hand_example():
    observed = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]])
    predicted = np.array([[0.4, 0.0],   # distances 0.4 (own), 1.6, 2.04: hit
                          [0.9, 0.0],   # 0.9 to o_0 < 1.1 to its own o_1: miss
                          [0.0, 1.5]])  # 0.5 (own), 1.5, 2.5: hit
    np.testing.assert_array_equal(m.centroid_accuracy(predicted, observed), [1.0, 0.0, 1.0])
    # Systema's graded score: the share of the other centroids farther than the own one
    np.testing.assert_allclose(m.centroid_accuracy(predicted, observed, graded=True), [1.0, 0.5, 1.0])
    np.testing.assert_allclose(m.centroid_accuracy(predicted, observed, graded=True),
                               1 - m.discrimination_ranks(predicted, observed, distance="euclidean"))
    # a shared shift (deltas against one reference) changes nothing
    shift = np.array([5.0, -3.0])
    np.testing.assert_array_equal(m.centroid_accuracy(predicted - shift, observed - shift), [1.0, 0.0, 1.0])
    # on gene 0 alone p_2 = 0 sits on o_0 and o_2 alike: a tie is not a hit
    assert m.centroid_accuracy(predicted, observed, genes=[np.array([0])] * 3)[2] == 0.0


# ----------------------------------------------------------------------------- perturbed centroid
def test_pearson_delta_against_a_reference_by_hand():
    y_true = np.array([1.0, 2.0, 3.0, 4.0])
    y_pred = np.array([2.0, 2.0, 4.0, 4.0])
    reference = np.array([0.0, 1.0, 0.0, 1.0])
    # deltas [1, 1, 3, 3] and [2, 1, 4, 3]: centred [-1, -1, 1, 1] and [-.5, -1.5, 1.5, .5]
    # -> covariance 4, norms 2 and sqrt(5) -> r = 2 / sqrt(5)
    assert m.pearson_delta(y_true, y_pred, reference) == pytest.approx(2 / np.sqrt(5))
    assert m.pearson_delta(y_true, y_pred, reference) == pytest.approx(
        pearsonr(y_true - reference, y_pred - reference).statistic)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(m.pearson_delta(y_true, reference + 1e-15, reference))   # no predicted delta
    with pytest.raises(ValueError, match="reference"):
        m.pearson_delta(y_true, y_pred, reference[:3])


def test_mean_of_centroids_weighs_every_group_once():
    X = np.array([[0.0, 0.0], [2.0, 2.0], [4.0, 4.0], [10.0, 0.0]])
    # group means (2, 2) and (10, 0): (6, 1), not the mean of the four cells (4, 1.5)
    np.testing.assert_allclose(m.mean_of_centroids(X, [np.array([0, 1, 2]), np.array([3])]), [6.0, 1.0])
    with pytest.raises(ValueError, match="empty"):
        m.mean_of_centroids(X, [np.array([], dtype=int)])


# ----------------------------------------------------------------------------- energy distance
def test_energy_distance_by_hand():
    # 1-D: a = {0, 1}, b = {2}: E|a-b| = 1.5, E|a-a'| = (0 + 1 + 1 + 0) / 4 = 0.5, E|b-b'| = 0
    assert m.energy_distance([0.0, 1.0], [2.0]) == pytest.approx(2 * 1.5 - 0.5 - 0.0)
    # 2-D: a = {(0, 0), (3, 4)}, b = {(0, 0)}: E|a-b| = 2.5, E|a-a'| = 10 / 4, E|b-b'| = 0
    assert m.energy_distance([[0.0, 0.0], [3.0, 4.0]], [[0.0, 0.0]]) == pytest.approx(2 * 2.5 - 2.5)


@pytest.mark.parametrize("seed", range(3))
def test_energy_distance_matches_scipy_in_one_dimension(seed):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=40), rng.normal(0.7, 1.5, size=25)
    # scipy returns the square root of 2E|X-Y| - E|X-X'| - E|Y-Y'|
    assert m.energy_distance(a, b) == pytest.approx(scipy_energy_distance(a, b) ** 2, rel=1e-10)


def test_energy_distance_properties():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(30, 5)), rng.normal(0.5, 1.0, size=(20, 5))
    assert m.energy_distance(a, a) == pytest.approx(0.0, abs=1e-12)
    assert m.energy_distance(a, b) == pytest.approx(m.energy_distance(b, a), rel=1e-12)
    assert m.energy_distance(a, b) > 0
    # same mean, other spread: the energy distance sees it, the squared flavour does not
    wide = 3.0 * (a - a.mean(0)) + a.mean(0)
    assert m.energy_distance(a, wide) > 0.5
    assert m.energy_distance(a, wide, squared=True) == pytest.approx(0.0, abs=1e-9)
    # squared Euclidean distances reduce to twice the squared distance between the means
    assert m.energy_distance(a, b, squared=True) == pytest.approx(
        2 * np.sum((a.mean(0) - b.mean(0)) ** 2), rel=1e-10)
    with pytest.raises(ValueError, match="same features"):
        m.energy_distance(a, b[:, :3])
    with pytest.raises(ValueError, match="at least one cell"):
        m.energy_distance(a, np.empty((0, 5)))
