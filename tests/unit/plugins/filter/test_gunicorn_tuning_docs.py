# Copyright: (c) 2026, flaskops.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The filter's documentation (what ``ansible-doc -t filter flaskops.stack.gunicorn_tuning`` shows) states
the model's own options, defaults, choices, presets and headroom: each test fails when either side
changes alone. The README's workload table is generated from the same documentation (make docs)."""

from __future__ import annotations

import re

import pytest
import yaml

from ansible_collections.flaskops.stack.plugins.filter import gunicorn_tuning as gunicorn_filter
from ansible_collections.flaskops.stack.plugins.module_utils import tuning

DOC = yaml.safe_load(gunicorn_filter.DOCUMENTATION)
#: Options of the filter itself, not workload options of the model.
FILTER_OPTIONS = {"_input", "workload"}
WORKLOAD_DOCS = {name: option for name, option in DOC["options"].items() if name not in FILTER_OPTIONS}


def _text(description):
    return " ".join(description) if isinstance(description, list) else description


ALL_TEXT = " ".join([_text(DOC["description"])] + [_text(option["description"]) for option in DOC["options"].values()])


def test_documents_exactly_the_models_options():
    assert set(WORKLOAD_DOCS) == set(tuning.WORKLOAD_DEFAULTS)


@pytest.mark.parametrize("name", sorted(tuning.WORKLOAD_DEFAULTS))
def test_default_is_the_models(name):
    # A default the model derives (None) is documented as prose, never as a value.
    assert WORKLOAD_DOCS[name].get("default") == tuning.WORKLOAD_DEFAULTS[name]


def test_profile_choices_presets_and_fallback_are_the_models():
    profile = WORKLOAD_DOCS["profile"]
    assert profile["choices"] == list(tuning.PROFILES)
    presets = "; ".join(
        "V(%s) %g ms CPU + %g ms waiting" % (name, cpu, wait) for name, (cpu, wait) in tuning.PROFILES.items()
    )
    assert presets in _text(profile["description"])
    assert "Defaults to V(%s)" % tuning.DEFAULT_PROFILE in _text(profile["description"])


def test_no_other_preset_figures_anywhere():
    stated = re.findall(r"([0-9.]+) ms CPU \+ ([0-9.]+) ms waiting", ALL_TEXT)
    assert sorted((float(c), float(w)) for c, w in stated) == sorted(tuning.PROFILES.values())


def test_headroom_is_the_models():
    stated = re.findall(r"headroom of ([0-9.]+)", ALL_TEXT)
    assert stated == ["%g" % tuning.CONCURRENCY_HEADROOM]
    assert not re.search(r"[0-9]+ ?% headroom", ALL_TEXT)


def test_worker_class_choices_are_the_models():
    assert WORKLOAD_DOCS["worker_class"]["choices"] == list(tuning.WORKER_CLASSES)


def test_return_documents_every_key_of_a_plan():
    plan = tuning.gunicorn_plan({"processor_vcpus": 2, "memtotal_mb": 4096})
    assert set(yaml.safe_load(gunicorn_filter.RETURN)["_value"]["contains"]) == set(plan)


def test_recycling_jitter_is_the_models():
    assert re.findall(r"([0-9.]+)% jitter", ALL_TEXT) == ["%g" % (tuning.MAX_REQUESTS_JITTER_SHARE * 100)]
