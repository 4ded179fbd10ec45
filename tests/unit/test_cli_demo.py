"""`elastickv-admin demo` defaults to the production-shaped preset; demo-ctl says what to
fix when no demo runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from elastickv_admin import cli


def test_demo_runs_the_demo_preset_and_design_profile_by_default():
    args = cli.build_parser().parse_args(["demo"])
    assert (args.preset, args.profile) == ("demo", "design")
    upstream = cli.build_parser().parse_args(["demo", "--profile", "upstream"])
    assert upstream.profile == "upstream"


def test_demo_ctl_without_a_running_demo_says_how_to_start_one(tmp_path: Path):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["demo-ctl", "--dataDir", str(tmp_path), "stop", "n2"])
    assert str(exit_.value) == (f"no demo runs on {tmp_path} (start it with elastickv-admin demo)")


def test_demo_ctl_needs_a_command():
    with pytest.raises(SystemExit) as exit_:
        cli.build_parser().parse_args(["demo-ctl"])
    assert exit_.value.code == 2
