"""The keys every ``hybrid-eda l96 run`` JSON summary must hold (the issue's contract), shared by the L96 tests."""

SUMMARY_KEYS = frozenset(
    {
        "analysis_rmse",
        "analysis_spread",
        "background_rmse",
        "crps",
        "rank_histogram",
        "cycles",
        "spinup",
        "wall_seconds",
        "cycles_per_second",
        "settings",
        "versions",
        "expected_analysis_rmse",
    }
)
