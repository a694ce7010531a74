"""Cluster tests: each test's report is kept on its item, so a fixture can tell at teardown
whether the test failed (and then print the broker's log, which explains most failures)."""

from __future__ import annotations

import pytest


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report
