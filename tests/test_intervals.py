"""How tables write intervals (report/intervals): each cell's interval is the bootstrap of its
own units, computed here a second way, and a row without values is shown as "–"."""
import numpy as np
import pandas as pd

from vitcls_utils.base.uncertainty import bootstrap
from vitcls_utils.report.intervals import interval_column, interval_wide


def test_a_column_of_intervals_bootstraps_each_rows_values_and_marks_the_missing():
    values = [np.r_[0.1, 0.5, 0.3, np.nan], float("nan"), np.r_[1.0, 1.0]]
    column = interval_column(values, digits=2)
    first = bootstrap(values[0])
    assert column[0] == f"[{first.low:.2f}, {first.high:.2f}] (1 excluded)"
    assert column[1] == "–" and column[2] == "[1.00, 1.00]"


def test_a_wide_table_of_a_long_frame_resamples_each_cells_units():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"block": np.repeat([1, 2], 8), "layer": "mlp",
                          "variant": np.tile(np.repeat(["A", "B"], 4), 2),
                          "agreement": rng.random(16)})
    wide = interval_wide(frame, "block", ["layer", "variant"], "agreement")
    assert list(wide.columns) == ["mlp, A", "mlp, B"] and list(wide.index) == [1, 2]
    units = frame[(frame.block == 2) & (frame.variant == "B")].agreement.to_numpy()
    assert wide.loc[2, "mlp, B"] == bootstrap(units).format(3)
    assert wide.loc[2, "mlp, B"].startswith(f"{units.mean():.3f} [")  # the old mean


def test_interval_columns_follow_their_means_and_the_arrays_are_dropped():
    from vitcls_utils.report.intervals import with_interval_columns

    mass = np.r_[0.2, 0.6, 0.4, 0.5]
    frame = pd.DataFrame({"method": ["a"], "mass": [mass.mean()], "share": [0.3],
                          "mass_images": [mass], "share_images": [np.r_[0.3, 0.3, 0.3, 0.3]]})
    shown = with_interval_columns(frame, {"mass": "mass_images", "share": "share_images"})
    assert list(shown.columns) == ["method", "mass", "mass, 95% CI", "share", "share, 95% CI"]
    assert shown.loc[0, "mass, 95% CI"] == f"[{bootstrap(mass).low:.3f}, {bootstrap(mass).high:.3f}]"
    assert shown.loc[0, "share, 95% CI"] == "[0.300, 0.300]"
