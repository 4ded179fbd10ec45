"""The constants the heatmap's scripts take from the server (keyviz/views.py page_config,
the "kv-config" JSON script) are the ones the API enforces: one copy, no drift."""

from __future__ import annotations

import json

from keyviz import views
from keyviz.budgets import DEFAULT_ROWS, MAX_COLS, MAX_ROWS
from keyviz.keys import RESERVED_PREFIXES
from keyviz.messages import FLAG_BITS
from keyviz.params import SERIES, WINDOW_PRESETS


def test_the_page_gets_the_apis_series_limits_and_flag_bits() -> None:
    config = views.page_config()
    assert sorted(config["series"]) == sorted(SERIES)
    assert config["series"][0] == "writes"  # the page's default series comes first
    assert (config["max_rows"], config["max_cols"], config["default_rows"]) == (
        MAX_ROWS,
        MAX_COLS,
        DEFAULT_ROWS,
    )
    assert config["flags"] == FLAG_BITS
    assert config["reserved_prefixes"] == [[p.decode(), label] for p, label in RESERVED_PREFIXES]


def test_every_window_preset_offered_has_a_length_and_the_default_is_one() -> None:
    config = views.page_config()
    offered = [value for value, _ in WINDOW_PRESETS]
    assert list(config["ranges_ms"]) == offered
    assert all(isinstance(ms, int) and ms > 0 for ms in config["ranges_ms"].values())
    assert config["ranges_ms"]["1h"] == 3_600_000
    assert config["default_range"] in config["ranges_ms"]
    json.dumps(config)  # what json_script serialises
