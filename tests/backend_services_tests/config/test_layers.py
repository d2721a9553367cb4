"""Precedence (runtime > environment > file > defaults), subtrees, explain, candidates."""

from __future__ import annotations

from backend_services.config.layers import MISSING, Candidate, Layer, LayeredConfig
from backend_services.config.model import REDACTED, ConfigSource, Entry


def _layered() -> LayeredConfig:
    lc = LayeredConfig(is_secret=lambda k: k.endswith("password"))
    lc.set_layer(Layer.DEFAULT, {"a": "default", "b": "default", "c": "default"})
    lc.set_layer(
        Layer.FILE,
        {"a": "file", "b": "file", "cb.timeout": 60, "cb.threshold": 5},
        {"a": "file config.json"},
    )
    lc.set_layer(Layer.ENVIRONMENT, {"a": "env"}, {"a": "environment variable SVC__A"})
    return lc


class TestPrecedence:
    def test_each_layer_overrides_the_ones_below(self) -> None:
        """runtime > environment > file > defaults, per key."""
        lc = _layered()
        assert lc.values["a"] == "env"
        assert lc.values["b"] == "file"
        assert lc.values["c"] == "default"
        changes = lc.set_runtime({"a": Entry("api", version=3)}, ["a"])
        assert lc.values["a"] == "api"
        assert [(c.key, c.old_value, c.new_value) for c in changes] == [("a", "env", "api")]

    def test_removing_a_higher_layer_reveals_the_lower(self) -> None:
        """Deleting a runtime value falls back to the environment's."""
        lc = _layered()
        lc.set_runtime({"a": Entry("api")}, ["a"])
        changes = lc.set_runtime({}, ["a"])
        assert lc.values["a"] == "env"
        assert changes[0].source is ConfigSource.ENVIRONMENT

    def test_unchanged_effective_value_reports_nothing(self) -> None:
        """A lower layer changing under a higher one is not an effective change."""
        lc = _layered()
        assert lc.set_layer(Layer.DEFAULT, {"a": "other", "b": "default", "c": "default"}) == []


class TestSubtrees:
    def test_prefix_reads_as_nested_dict(self) -> None:
        """A dotted prefix returns the dict of everything below it."""
        lc = _layered()
        assert lc.lookup("cb") == {"timeout": 60, "threshold": 5}
        assert lc.lookup("cb.timeout") == 60
        assert lc.lookup("nothing", "dflt") == "dflt"

    def test_returned_values_are_copies(self) -> None:
        """Mutating what lookup returns never changes the configuration."""
        lc = LayeredConfig()
        lc.set_layer(Layer.FILE, {"xs": [1, 2]})
        got = lc.lookup("xs")
        got.append(3)
        assert lc.lookup("xs") == [1, 2]


class TestExplain:
    def test_explain_names_source_and_overrides(self) -> None:
        """explain() gives the winning layer and every lower layer it overrides."""
        lc = _layered()
        ex = lc.explain("a")
        assert (ex.layer, ex.value, ex.source) == ("environment", "env", ConfigSource.ENVIRONMENT)
        assert [o[0] for o in ex.overrides] == ["file", "default"]
        assert ex.detail == "environment variable SVC__A"

    def test_explain_runtime_names_version_and_author(self) -> None:
        """A runtime value is explained with its version and author."""
        lc = _layered()
        lc.set_runtime({"a": Entry("api", version=7, author="host:1")}, ["a"])
        ex = lc.explain("a").as_dict()
        assert ex["layer"] == "runtime"
        assert ex["version"] == 7
        assert "host:1" in ex["detail"]
        assert ex["overrides"][0]["layer"] == "environment"

    def test_explain_redacts_secrets(self) -> None:
        """Secret values are *** in an explanation unless revealed."""
        lc = LayeredConfig(is_secret=lambda k: k == "db.password")
        lc.set_layer(Layer.FILE, {"db.password": "hunter2"})
        assert lc.explain("db.password").value == REDACTED
        assert lc.explain("db.password", reveal=True).value == "hunter2"

    def test_explain_masks_url_passwords(self) -> None:
        """A URL's password never shows in an explanation."""
        lc = LayeredConfig()
        lc.set_layer(Layer.ENVIRONMENT, {"service_discovery.redis_url": "redis://u:pw@h:1/0"})
        assert lc.explain("service_discovery.redis_url").value == "redis://u:***@h:1/0"

    def test_explain_prefix_and_unset(self) -> None:
        """A prefix explains its children; an unset key says so."""
        lc = _layered()
        ex = lc.explain("cb")
        assert ex.value == {"timeout": 60, "threshold": 5}
        assert len(ex.children) == 2
        assert lc.explain("zzz").source is None


class TestCandidate:
    def test_candidate_shows_values_after_change_without_applying(self) -> None:
        """A candidate resolves through the change; the layers stay as they were."""
        lc = _layered()
        cand = Candidate(lc, runtime={"cb.timeout": Entry(5), "a": None})
        assert cand.value("cb") == {"timeout": 5, "threshold": 5}
        assert cand.value("a") == "env"
        assert lc.values["cb.timeout"] == 60

    def test_candidate_with_replaced_file_layer(self) -> None:
        """Replacing the file layer in a candidate hides keys it no longer has."""
        lc = _layered()
        cand = Candidate(lc, layer=(Layer.FILE, {"b": "new"}))
        assert cand.value("b") == "new"
        assert cand.value("cb") is MISSING
        assert cand.document()["a"] == "env"
