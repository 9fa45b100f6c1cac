"""The statistics of the tables: seeds, paired comparisons, an interval per cell, ranks across datasets.

Pure functions on plain numbers (dicts, arrays, the records' predictions); nothing here reads files or prints.
Modules: ``paired`` (1, 2), ``bootstrap`` (3), ``ranks`` (4), ``prob`` (5), ``variance`` (6), ``power`` (7),
``verdicts`` (8), ``readers`` (the radiologists' reference row); their public names (but the readers') are re-exported
here.
Beside them, not re-exported (they read the committed nodule index): ``readers``, the radiologists' leave-one-out
reference row of Tables 1-2, and ``calibrate`` with ``simulate``, the command that measures these tests' error rates on
simulated benchmarks of the protocol (docs/statistics.md), and ``plan``, the command of the number of partitions.
Every p-value and interval is two-sided; every number is float64.

1. Seeds (``seed_summary``). With several seeds, a fold's value is the mean over its seeds; the table's mean and
   ``±`` are the mean and the sample standard deviation (ddof=1) over folds of those fold means (the paper's ``±``:
   the spread over the five test folds). The seed standard deviation is reported beside it: the pooled within-fold
   standard deviation over seeds, ``sqrt(sum_f sum_s (x_fs - xbar_f)^2 / sum_f (n_f - 1))`` (with the same seeds in
   every fold: the square root of the mean over folds of the per-fold seed variance, ddof=1).

2. Paired comparisons against a reference method (``corrected_t``, ``wilcoxon_signed_rank``, ``holm``,
   ``compare_to_reference``). The unit is a test fold of a partition, (repeat, fold): the runs both methods have are
   averaged over seeds within each unit (``paired_units``) and the differences are taken over the units (n = folds x
   partitions; seeds share a fold's data, so they are not resamples). The t-test is
   the corrected resampled t-test of Nadeau & Bengio (2003), in the corrected repeated k-fold form of Bouckaert &
   Frank (2004): the training sets of the folds overlap, so the differences are correlated and the plain
   ``s^2 / n`` underestimates the variance of their mean; the correction inflates it to ``(1/n + n_test/n_train) s^2``.
   Holm's step-down correction (Holm 1979) is applied across the methods compared in one table (per dataset and
   metric). Where a test cannot give a p below alpha with the pairs at hand (the exact Wilcoxon test with 5 pairs
   cannot go below 2/2^5 = 0.0625), the result says so (``reachable``, ``reason``) and ``describe_p`` prints that
   sentence instead of a p that could never have been significant.

3. An interval for every cell (``patient_bootstrap``): the percentile bootstrap (Efron & Tibshirani 1993) of the
   number the table shows, the mean over folds of the per-fold metric (seeds averaged within a fold), resampling
   patients with replacement within each fold (the fold is the stratum; a patient's nodules stay together, since
   nodules of one patient are not independent). Seeded and reproducible; the draw order is documented there.

4. Ranks across datasets and folds (``friedman``, ``draw_cd``): the Friedman test with average ranks (rank 1 = best)
   over blocks = (dataset, fold) pairs (seed-averaged), the Iman-Davenport F beside it, the Nemenyi post-hoc
   p-values and critical difference ``CD = q_alpha sqrt(k(k+1)/(6N))`` and the critical-difference diagram of
   Demsar (2006).

Why scikit-posthocs and not autorank for the post-hoc test and the diagram (checked on autorank 1.3.0 and
scikit-posthocs 0.17.1): autorank chooses its tests itself (Shapiro-Wilk per method, then repeated-measures ANOVA with
Tukey's HSD, whose plot is an interval plot and not a CD diagram, unless ``force_mode='nonparametric'``), refuses
fewer than five blocks, prints to stdout when a mode is forced, only plots when the omnibus test rejects (unless told
otherwise), and draws its bars from its own grouping of consecutive ranks. scikit-posthocs does one thing each:
``posthoc_nemenyi_friedman`` gives the Nemenyi p-value matrix from a blocks x methods table; so the Friedman
statistic and the ranks stay ours (tested against scipy), the test choice stays explicit, and the diagram's bars come
from the same p-values the tables could print. The diagram itself is drawn here (``draw_cd``): its axis runs from 1
to k whatever ranks were observed (so the CD bar is read against the whole scale), and each method has a row of its
own (tied methods never hide each other), which the library's drawing gave neither. (scikit-posthocs imports pyplot
and seaborn when imported, so it is imported lazily, after the Agg backend is chosen.)

5. P(A > B) (``prob_outperform``): the share of units on which a method beats the reference (ties half), its percentile
   bootstrap interval over units, and Bouthillier et al.'s (MLSys 2021) rule: better when the interval is above 1/2
   and P > 0.75, worse when below 1/2 and P < 0.25.

6. Variance components (``cell_components``, ``nested_components``): a cell's variance split into partition, fold
   and seed by the nested random-effects ANOVA (method of moments; Searle, Casella & McCulloch 1992); a level for
   hyperparameters slots in once tuned records carry their draws.

7. Power and the smallest detectable difference (``power``: ``corrected_t_power``, ``detectable_difference``,
   ``detectable_floor``, ``plan_partitions``): the power of the corrected t by the noncentral t (Cohen 1988), the
   difference it detects with 80% power at the table's n and n_test/n_train, and its floor as partitions grow;
   ``python -m benchmarks.stats.plan`` answers "how many partitions" from them.

8. Verdicts (``verdicts``: ``verdict``): whether a mark (* or P(A > B)'s arrows) of a rule may be printed at R partitions,
   from the rule's false-positive rates measured by the calibration (the one place that decides).

References. C. Nadeau, Y. Bengio, Inference for the generalization error, Machine Learning 52 (2003) 239-281.
R. R. Bouckaert, E. Frank, Evaluating the replicability of significance tests for comparing learning algorithms,
PAKDD 2004, LNCS 3056, 3-12. S. Holm, A simple sequentially rejective multiple test procedure, Scand. J. Statist.
6 (1979) 65-70. F. Wilcoxon, Individual comparisons by ranking methods, Biometrics Bulletin 1 (1945) 80-83.
B. Efron, R. J. Tibshirani, An Introduction to the Bootstrap, Chapman & Hall 1993. M. Friedman, J. Amer. Statist.
Assoc. 32 (1937) 675-701. R. L. Iman, J. M. Davenport, Comm. Statist. A 9 (1980) 571-595. P. Nemenyi,
Distribution-free multiple comparisons, PhD thesis, Princeton 1963. J. Demsar, Statistical comparisons of
classifiers over multiple data sets, JMLR 7 (2006) 1-30. J. Cohen, Statistical Power Analysis for the Behavioral
Sciences, 2nd ed., Lawrence Erlbaum 1988.
"""
from benchmarks.stats.bootstrap import (
    AUC,
    PATIENT_ID_LENGTH,
    Accuracy,
    BootstrapResult,
    cell_intervals,
    patient_bootstrap,
    patient_of,
    prediction_rows,
)
from benchmarks.stats.paired import (
    NAN,
    Comparison,
    SeedSummary,
    TestResult,
    UnitSummary,
    compare_to_reference,
    corrected_t,
    describe_p,
    holm,
    min_reachable_p,
    paired_units,
    seed_summary,
    split_sizes,
    unit_key,
    unit_means,
    unit_summary,
    wilcoxon_signed_rank,
)
from benchmarks.stats.power import corrected_t_power, detectable_difference, detectable_floor, plan_partitions, pooled_sd
from benchmarks.stats.prob import GAMMA, ProbResult, describe_prob, prob_outperform
from benchmarks.stats.ranks import FriedmanResult, block_table, draw_cd, friedman
from benchmarks.stats.variance import balanced_subset, cell_components, nested_components
from benchmarks.stats.verdicts import Verdict, verdict

__all__ = ["AUC", "GAMMA", "Accuracy", "BootstrapResult", "Comparison", "FriedmanResult", "NAN", "PATIENT_ID_LENGTH", "ProbResult", "SeedSummary",
           "TestResult", "UnitSummary", "Verdict", "balanced_subset", "block_table", "cell_components", "cell_intervals", "compare_to_reference",
           "corrected_t", "corrected_t_power", "describe_p", "describe_prob", "detectable_difference", "detectable_floor", "draw_cd", "friedman",
           "holm", "min_reachable_p", "nested_components", "paired_units", "patient_bootstrap", "patient_of", "plan_partitions", "pooled_sd",
           "prediction_rows", "prob_outperform", "seed_summary", "split_sizes", "unit_key", "unit_means", "unit_summary", "verdict",
           "wilcoxon_signed_rank"]
