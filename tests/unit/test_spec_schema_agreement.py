"""The pydantic models and the CRD schema (with its CEL rules) judge every spec alike.

A user meets the schema twice: ``kubectl apply`` is judged by the CRD (OpenAPI
schema, strict fields and CEL rules) and ``requeue replay -f`` by the models.
If the two disagree, a manifest the CLI runs is refused by the cluster, or the
operator meets a spec it cannot parse and the resource sits there with a
SpecInvalid nobody was warned about at apply time.

The strategies build whole DLQReplay and QueuePolicy documents field by field,
each field either valid or near-valid: wrong types, numbers just out of range
and far beyond int64, bad durations and regular expressions, timestamps in the
forms pydantic would happily coerce, mode Bulk with per-job filters, unknown
fields, empty lists, explicit nulls, trailing newlines and huge strings. Every
example must be accepted by both judges or rejected by both.

Derandomized with no example database, so CI sees the same examples every run.
"""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from requeue.api import DLQReplay, QueuePolicy
from requeue.api.loading import parse
from requeue.errors import SpecInvalid
from support.crd_validate import load_crds, validate

CRDS = load_crds()

#: Deterministic (same examples on every run) and without a database of past failures.
AGREEMENT = settings(
    max_examples=1000,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# -- values that are wrong in some way -----------------------------------------

_BIG = [2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**70, -(2**63) - 1]
_wrong_type = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from(_BIG),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.sampled_from(["", "5", "true", "1s\n", " bull"]),
    st.builds(lambda: "x" * 5000),
    st.lists(st.integers(0, 2), max_size=2),
    st.dictionaries(st.sampled_from(["a", "name"]), st.integers(0, 2), max_size=2),
)

#: One field in this many is wrong, so about a third of the documents are valid.
_ONE_IN = 16
#: True once in ``_ONE_IN`` draws. Not at 0: Hypothesis favours the ends of a range.
_rare = st.integers(0, _ONE_IN - 1).map(lambda roll: roll == _ONE_IN // 2)


def maybe(good: st.SearchStrategy[Any], *near: Any) -> st.SearchStrategy[Any]:
    """Mostly ``good``; sometimes a near miss from ``near`` or a value of a wrong type."""
    bad = _wrong_type
    if near:
        picks = st.integers(0, len(near) - 1).map(lambda i: copy.deepcopy(near[i]))
        bad = st.booleans().flatmap(lambda named: picks if named else _wrong_type)
    return _rare.flatmap(lambda rare: bad if rare else good)


def obj(
    required: dict[str, Any],
    optional: dict[str, Any] | None = None,
    also: st.SearchStrategy[dict[str, Any]] | None = None,
) -> st.SearchStrategy[Any]:
    """An object with the given fields (and those ``also`` draws), sometimes with an unknown one."""
    base = st.fixed_dictionaries(required, optional=optional or {})
    unknown = st.sampled_from([{"unknownField": 1}, {"Queue": "x"}])
    extra = _rare.flatmap(lambda rare: unknown if rare else st.just({}))
    return st.builds(
        lambda known, more, odd: {**known, **more, **odd}, base, st.just({}) if also is None else also, extra
    )


def exactly_one(choices: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """Mostly one of the keys (a CEL "exactly one of" rule); sometimes none or several."""
    one = st.sampled_from(sorted(choices)).flatmap(lambda key: choices[key].map(lambda value: {key: value}))
    any_number = st.fixed_dictionaries({}, optional=choices)
    return _rare.flatmap(lambda rare: any_number if rare else one)


def together(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """Mostly all of the fields or none (a CEL "go together" rule); sometimes only some."""
    some = st.fixed_dictionaries({}, optional=fields)
    return _rare.flatmap(lambda rare: some if rare else st.one_of(st.just({}), st.fixed_dictionaries(fields)))


def ints(lo: int, hi: int) -> st.SearchStrategy[int]:
    """Integers around the bounds ``lo``..``hi`` (the edges and one past them)."""
    return st.one_of(st.integers(lo, min(hi, lo + 5)), st.sampled_from([lo - 1, hi, hi + 1]))


_durations = st.one_of(
    st.sampled_from(["500ms", "30s", "15m", "2h", "7d", "1h30m", "2.5m", "0s"]),
    st.from_regex(r"\A[0-9]{1,3}(\.[0-9])?(ms|s|m|h|d)\Z"),
)
_bad_durations = ("10 seconds", "1.5.5s", "s", "5", "-1s", "1S", "1y", "1s\n", "١s", "1" * 40 + "s")
_names = st.one_of(st.sampled_from(["db", "a", "redis-1", "x" * 63]), st.from_regex(r"\A[a-z0-9]{1,10}\Z"))
_bad_names = ("Database_1", "-a", "a-", "x" * 64, "a.b", "a\n")
_queue_names = st.one_of(
    st.sampled_from(["default", "whatsapp.send", "q" * 200]), st.from_regex(r"\A[a-z]{1,8}\Z")
)
_bad_queue_names = ("bad:queue", "", "has space", "tab\there", "q" * 201, "nl\n", "nbsp\u00a0q")
_timestamps = st.sampled_from(
    [
        "2025-07-16T09:00:00Z",
        "2025-07-16T09:00:00.123456Z",
        "2025-07-16T11:00:00+02:00",
        "2025-07-16T09:00:00-00:30",
        "2024-02-29T00:00:00Z",
    ]
)
_bad_timestamps = (
    "yesterday",
    "2025-07-16T09:00:00",
    "2025-07-16",
    "2025-07-16 09:00:00Z",
    "2025-07-16t09:00:00z",
    "2025-02-30T00:00:00Z",
    "2025-07-16T24:00:00Z",
    "1752656400",
    1752656400,
    "2025-07-16T09:00:00.1234567891Z",
    "2025-07-16T09:00:00+25:00",
)
_regexes = st.sampled_from(["429|[Rr]ate limit", "^timeout", "", "(?i)econnreset", r"\d+", "a" * 1024])
_bad_regexes = ("(unclosed", r"(a)\1", "(?=a)", "a{1001}", "[z-a]", "a" * 1025, "*")
_secret_ref = obj(
    {
        "name": maybe(_names, "Not_A_Name", "", "a" * 254),
        "key": maybe(st.sampled_from(["url", "tls.crt", "A_b-1"]), "", "has space", "k\n", "k/1"),
    }
)
_data_match = st.one_of(
    st.dictionaries(
        st.sampled_from(["to", "tenant", "n"]), st.one_of(st.text(max_size=3), st.integers()), max_size=2
    ),
    st.just({"deep": {"nested": [1, None, {"x": True}]}}),
    st.just({"big": 2**70}),
)


def _instant(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


#: Mostly an ordered window (or one end of it); sometimes reversed or equal instants.
_window: st.SearchStrategy[dict[str, str]] = st.one_of(
    st.just({}),
    _timestamps.map(lambda t: {"failedAfter": t}),
    _timestamps.map(lambda t: {"failedBefore": t}),
    st.lists(_timestamps, min_size=2, max_size=2, unique=True).map(
        lambda ts: dict(zip(("failedAfter", "failedBefore"), sorted(ts, key=_instant), strict=True))
    ),
    st.lists(_timestamps, min_size=2, max_size=2).map(
        lambda ts: dict(zip(("failedAfter", "failedBefore"), ts, strict=True))
    ),
)
_bad_window: st.SearchStrategy[dict[str, str]] = st.one_of(
    st.sampled_from(_bad_timestamps).map(
        lambda t: {"failedAfter": t, "failedBefore": "2030-01-01T00:00:00Z"}
    ),
    st.sampled_from(_bad_timestamps).map(lambda t: {"failedBefore": t}),
)
_window_or_bad: st.SearchStrategy[dict[str, str]] = _rare.flatmap(
    lambda rare: _bad_window if rare else _window
)


_dedupe_paths = st.one_of(
    st.sampled_from(["$.orderId", "$.a.b", "$.items[0].sku", "$[3]", "$._x-y", "$" + ".a" * 16]),
    st.from_regex(r"\A\$(\.[a-z]{1,4}|\[[1-9][0-9]{0,2}\]){1,4}\Z"),
)
_bad_dedupe_paths = (
    "orderId",
    "$",
    "$..a",
    "$.a[*]",
    "$['a']",
    "$.a[01]",
    "$.a b",
    "$.a\n",
    "$" + ".a" * 17,
    "$.a" + "b" * 300,
    "$.é",
)


def selector(*, per_job: bool = True) -> st.SearchStrategy[Any]:
    """A selector; without ``per_job`` (mode Bulk) mostly only a time window and a count."""
    per_job_fields = {
        "jobNames": maybe(
            st.lists(st.sampled_from(["whatsapp.send", "a*", "[ab]?"]), max_size=3),
            [""],
            ["x"] * 101,
        ),
        "failedReasonPattern": maybe(_regexes, *_bad_regexes),
        "dataMatch": maybe(_data_match),
        "dedupeBy": maybe(_dedupe_paths, *_bad_dedupe_paths),
    }
    count = {"maxJobs": maybe(ints(1, 10_000_000))}
    if per_job:
        return obj({}, {**per_job_fields, **count}, also=_window_or_bad)
    filters = st.fixed_dictionaries({}, optional=per_job_fields)
    rare_filters = _rare.flatmap(lambda rare: filters if rare else st.just({}))
    window_and_filters = st.builds(lambda w, f: {**w, **f}, _window_or_bad, rare_filters)
    return obj({}, count, also=window_and_filters)


def rate() -> st.SearchStrategy[Any]:
    return obj(
        {},
        {
            "jobsPerSecond": maybe(
                st.one_of(st.floats(0.001, 1_000_000), ints(1, 1_000_000)), 0, -1, 1e-300, 1_000_000.5
            ),
            "batchSize": maybe(ints(1, 1000), 5.0),
            "maxWaiting": maybe(ints(1, 2**63 - 1)),
        },
    )


_redis = obj(
    {"urlSecretRef": maybe(_secret_ref)},
    {
        "db": maybe(ints(0, 1023)),
        "tls": maybe(obj({}, {"caSecretRef": _secret_ref, "insecureSkipVerify": st.booleans()})),
    },
)
_header = obj(
    {"name": maybe(st.sampled_from(["Authorization", "X-Api-Key"]), "bad header", "")},
    {"prefix": maybe(st.just("Bearer "), "p" * 65)},
    also=exactly_one(
        {
            "value": maybe(st.sampled_from(["token", ""]), "v" * 8193),
            "valueFrom": maybe(obj({"secretKeyRef": _secret_ref})),
        }
    ),
)
_http_gate = obj(
    {
        "url": maybe(
            st.sampled_from(["https://api.example.com/health", "http://h:8080/"]),
            "ftp://x",
            "https://a b",
            "",
        )
    },
    {
        "method": maybe(st.sampled_from(["GET", "HEAD", "POST"]), "DELETE", "get"),
        "headers": maybe(st.lists(_header, max_size=2)),
        "body": maybe(st.just("{}"), "b" * 65537),
        "expectStatus": maybe(st.lists(st.integers(100, 599), min_size=1, max_size=3), [], [99], [600]),
        "timeout": maybe(_durations, *_bad_durations),
        "followRedirects": maybe(st.booleans()),
    },
    also=together(
        {
            "jsonPath": maybe(st.sampled_from(["$.status", "$.checks[0].ok", "$"]), "status", "$..x"),
            "equals": maybe(st.sampled_from(["ok", 1, True, 0.5])),
        }
    ),
)
_gate = obj(
    {"name": maybe(_names, *_bad_names)},
    also=exactly_one(
        {
            "redis": maybe(
                obj(
                    {},
                    {
                        "maxLatency": maybe(_durations, *_bad_durations),
                        "maxMemoryPercent": maybe(st.floats(0.5, 100), 0, 100.5),
                        "urlSecretRef": _secret_ref,
                    },
                )
            ),
            "postgres": maybe(
                obj({"dsnSecretRef": _secret_ref}, {"query": maybe(st.just("SELECT 1"), "", "q" * 4097)})
            ),
            "http": maybe(_http_gate),
        }
    ),
)
_gate_policy = obj(
    {},
    {
        "interval": maybe(_durations, *_bad_durations),
        "timeout": maybe(_durations, *_bad_durations),
        "successThreshold": maybe(ints(1, 100)),
        "failureThreshold": maybe(ints(1, 100)),
        "recheckDuringReplay": maybe(st.booleans(), 0, "yes"),
    },
)
_verify = obj(
    {},
    {
        "window": maybe(_durations, *_bad_durations),
        "minSuccessRate": maybe(st.floats(0, 1), 1, 0, 1.5, -0.1),
        "maxFailedAgain": maybe(ints(0, 2**63 - 1)),
    },
)
_gates = maybe(st.lists(_gate, max_size=3), [{"name": "a"}] * 21)
_bools = maybe(st.booleans(), 0, 1, "true")

_REPLAY_FIELDS = {
    "prefix": maybe(st.sampled_from(["bull", "{bull}", "my-app"]), "", "has space", "bull\n"),
    "rate": maybe(rate()),
    "resetAttempts": _bools,
    "pauseQueue": _bools,
    "gates": _gates,
    "gatePolicy": maybe(_gate_policy),
    "verify": maybe(_verify),
    "suspend": _bools,
    "dryRun": _bools,
    "ttlSecondsAfterFinished": maybe(ints(0, 2_147_483_647)),
}
_REQUIRED = {"redis": maybe(_redis), "queue": maybe(_queue_names, *_bad_queue_names)}
_EXACT = obj(
    _REQUIRED,
    {
        **_REPLAY_FIELDS,
        "mode": maybe(st.just("Exact"), "exact", ""),
        "selector": maybe(selector()),
        "targetQueue": maybe(_queue_names, *_bad_queue_names),
    },
)
_BULK = obj(
    {**_REQUIRED, "mode": maybe(st.just("Bulk"), "bulk", "BULK")},
    {
        **_REPLAY_FIELDS,
        "selector": maybe(selector(per_job=False)),
        "targetQueue": maybe(st.nothing(), "elsewhere"),
    },
)
REPLAY_SPEC = st.booleans().flatmap(lambda bulk: _BULK if bulk else _EXACT)

_clean_rule = obj({"grace": maybe(_durations, *_bad_durations)}, {"limit": maybe(ints(1, 100_000))})
_count = obj({"above": maybe(ints(0, 10))}, {"minQueues": maybe(ints(1, 500))})
_escalation_condition = obj(
    {},
    also=exactly_one(
        {
            "failed": maybe(
                obj({"above": maybe(ints(0, 10))}, {"growing": _bools, "minQueues": maybe(ints(1, 500))})
            ),
            "waiting": maybe(_count),
            "stuckActive": maybe(_count),
            "processingStopped": maybe(
                obj(
                    {},
                    {
                        "reasons": maybe(
                            st.lists(
                                st.sampled_from(["WorkersDown", "WorkersStuck", "PausedByOthers"]), max_size=3
                            ),
                            ["Down"],
                        ),
                        "minQueues": maybe(ints(1, 500)),
                    },
                )
            ),
            "breaching": maybe(
                obj(
                    {},
                    {
                        "kinds": maybe(
                            st.lists(st.sampled_from(["failed", "failureRate"]), max_size=2), ["x"]
                        ),
                        "minQueues": maybe(ints(1, 500)),
                    },
                )
            ),
            "failedJobNames": maybe(
                obj({"atLeast": maybe(ints(1, 50), 51)}, {"minFailures": maybe(ints(1, 2**63 - 1))})
            ),
            "corruptJobs": maybe(_count),
            "gates": maybe(
                obj(
                    {},
                    {
                        "names": maybe(st.lists(_names, max_size=2), list(_bad_names[:1])),
                        "kinds": maybe(
                            st.lists(st.sampled_from(["redis", "postgres", "http"]), max_size=2), ["mysql"]
                        ),
                        "red": maybe(st.sampled_from(["any", "all"]), "most"),
                    },
                )
            ),
        }
    ),
)
_channel = obj(
    {
        "name": maybe(st.sampled_from(["oncall", "incident", "L1"]), "-x", ""),
        "webhookSecretRef": _secret_ref,
    },
    {"mention": maybe(st.sampled_from(["", "<!here>"]), "x" * 201)},
)
_escalation = obj(
    {
        "levels": maybe(
            st.lists(
                obj(
                    {
                        "name": maybe(st.sampled_from(["L1", "L2", "critical"]), "", "a b"),
                        "when": maybe(
                            obj(
                                {},
                                {
                                    "all": maybe(st.lists(_escalation_condition, max_size=2)),
                                    "any": maybe(st.lists(_escalation_condition, max_size=2)),
                                },
                            )
                        ),
                    },
                    {
                        "holdFor": maybe(_durations, *_bad_durations),
                        "actions": maybe(
                            obj(
                                {},
                                {
                                    "notify": maybe(st.lists(_channel, max_size=2)),
                                    "pauseQueues": _bools,
                                    "stopAutoReplay": _bools,
                                    "snapshot": _bools,
                                    "sampleSize": maybe(ints(1, 50)),
                                },
                            )
                        ),
                    },
                ),
                max_size=3,
            )
        )
    }
)
POLICY_SPEC = obj(
    {
        "redis": maybe(_redis),
        "queues": maybe(st.lists(_queue_names, min_size=1, max_size=3), [], ["a:b"], ["q"] * 501),
    },
    {
        "prefix": maybe(st.just("bull"), "", "x y"),
        "interval": maybe(_durations, *_bad_durations),
        "gates": _gates,
        "gatePolicy": maybe(_gate_policy),
        "thresholds": maybe(
            obj(
                {},
                {
                    "failed": maybe(ints(0, 2**63 - 1)),
                    "waiting": maybe(ints(0, 2**63 - 1)),
                    "failureRatePercent": maybe(st.floats(0, 100), 100.5, -1),
                    "window": maybe(_durations, *_bad_durations),
                    "stalledActiveSeconds": maybe(ints(1, 2_147_483_647)),
                    "failureRateMinJobs": maybe(ints(1, 2**63 - 1)),
                },
            )
        ),
        "actions": maybe(
            obj(
                {},
                {
                    "pauseWhileGatesFail": _bools,
                    "autoReplay": maybe(
                        obj(
                            {},
                            {
                                "selector": maybe(selector()),
                                "stableFor": maybe(_durations, *_bad_durations),
                                "maxReplaysPerJob": maybe(ints(1, 100)),
                                "cooldown": maybe(_durations, *_bad_durations),
                                "rate": maybe(rate()),
                                "verify": maybe(_verify),
                            },
                        )
                    ),
                    "clean": maybe(obj({}, {"completed": maybe(_clean_rule), "failed": maybe(_clean_rule)})),
                },
            )
        ),
        "alerts": maybe(
            obj(
                {},
                {
                    "events": _bools,
                    "slackWebhookSecretRef": maybe(_secret_ref),
                    "repeatAfter": maybe(_durations, *_bad_durations),
                },
            )
        ),
        "dryRun": _bools,
        "metrics": maybe(obj({}, {"maxJobLookups": maybe(st.sampled_from([0, 1, 1000]))})),
        "escalation": maybe(_escalation),
    },
)


def judge(model: type[DLQReplay | QueuePolicy], spec: Any) -> tuple[bool, str, list[str]]:
    """(model accepts, its error, the schema's errors) for ``spec`` in a whole manifest."""
    doc = {
        "apiVersion": "requeue.dev/v1alpha1",
        "kind": model.__name__,
        "metadata": {"name": "x", "namespace": "default"},
        "spec": spec,
    }
    try:
        parse(model, doc)
    except SpecInvalid as exc:
        model_ok, model_error = False, str(exc)
    else:
        model_ok, model_error = True, ""
    return model_ok, model_error, validate(CRDS[model.__name__], doc)


@AGREEMENT
@given(REPLAY_SPEC)
def test_dlqreplay_model_and_schema_agree(spec: dict[str, Any]) -> None:
    model_ok, model_error, schema_errors = judge(DLQReplay, spec)
    assert model_ok == (not schema_errors), (
        f"model: {model_error or 'accepts'}; schema: {schema_errors or 'accepts'}"
    )


@AGREEMENT
@given(POLICY_SPEC)
def test_queuepolicy_model_and_schema_agree(spec: dict[str, Any]) -> None:
    model_ok, model_error, schema_errors = judge(QueuePolicy, spec)
    assert model_ok == (not schema_errors), (
        f"model: {model_error or 'accepts'}; schema: {schema_errors or 'accepts'}"
    )


# -- the disagreements the generated specs found, pinned --------------------------

_VALID_REPLAY: dict[str, Any] = {
    "redis": {"urlSecretRef": {"name": "redis", "key": "url"}},
    "queue": "default",
    "selector": {"jobNames": ["whatsapp.send"], "failedAfter": "2025-07-16T09:00:00Z"},
    "gates": [
        {"name": "api", "http": {"url": "https://api.example.com/health", "jsonPath": "$.ok", "equals": True}}
    ],
}


def _with(path: str, value: Any) -> dict[str, Any]:
    spec = copy.deepcopy(_VALID_REPLAY)
    node: Any = spec
    *parents, last = path.split(".")
    for part in parents:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    node[last] = value
    return spec


#: (what was wrong, spec, whether both must accept). Each once split the two judges.
FOUND = [
    ("invalid RE2 passed the schema", _with("selector.failedReasonPattern", "(unclosed"), False),
    ("RE2 refuses backreferences", _with("selector.failedReasonPattern", r"(a)\1"), False),
    ("RE2 refuses lookahead", _with("selector.failedReasonPattern", "(?=a)"), False),
    ("pydantic took a space for T", _with("selector.failedAfter", "2025-07-16 09:00:00Z"), False),
    ("pydantic took a lower-case t and z", _with("selector.failedAfter", "2025-07-16t09:00:00z"), False),
    ("pydantic took unix seconds as text", _with("selector.failedAfter", "1752656400"), False),
    ("pydantic took unix seconds as a number", _with("selector.failedAfter", 1752656400), False),
    ("an explicit null is pruned by the API server", _with("verify", None), True),
    ("a null in a required-with-default field too", _with("prefix", None), True),
    ("a null equals is no equals", _with("gates.0.http.equals", None), False),
    ("Python's $ matched before a final newline", _with("queue", "default\n"), False),
    ("\\s was Unicode to pydantic, ASCII to RE2", _with("queue", "no\u00a0break"), True),
    ("beyond int64 crashed the CEL stand-in", _with("verify", {"maxFailedAgain": 2**63}), False),
    ("int64 max is a valid count", _with("verify", {"maxFailedAgain": 2**63 - 1}), True),
    ("seconds beyond int32 overflow a date", _with("ttlSecondsAfterFinished", 2**31), False),
    ("dedupeBy with mode Bulk", {**_with("selector.dedupeBy", "$.orderId"), "mode": "Bulk"}, False),
    ("dedupeBy beside jobIds", {**_VALID_REPLAY, "selector": {"jobIds": ["1"], "dedupeBy": "$.a"}}, False),
    ("dedupeBy at 16 segments", _with("selector.dedupeBy", "$" + ".a" * 16), True),
    ("dedupeBy at 17 segments", _with("selector.dedupeBy", "$" + ".a" * 17), False),
    (
        "beyond int64 inside dataMatch is a float to the API server",
        _with("selector.dataMatch", {"n": 2**70}),
        True,
    ),
]


def test_the_valid_base_is_valid() -> None:
    assert judge(DLQReplay, _VALID_REPLAY) == (True, "", [])


@pytest.mark.parametrize(("why", "spec", "valid"), FOUND, ids=[f[0] for f in FOUND])
def test_found_disagreements_stay_fixed(why: str, spec: dict[str, Any], valid: bool) -> None:
    model_ok, model_error, schema_errors = judge(DLQReplay, spec)
    assert (model_ok, not schema_errors) == (valid, valid), (
        f"{why}: model: {model_error}; schema: {schema_errors}"
    )
