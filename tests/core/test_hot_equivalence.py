"""The hot path's shortcuts give exactly what the plain code gives: the ASGI denial rendering,
the compiled rate-limit header renderers, the memoised refusal headers, the canonical address
fast path, the key-id check, the brute-force counter's shortcut and the 403 cache."""

from __future__ import annotations

import ipaddress
import math
import socket
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyguard.core import addresses
from keyguard.core import decision as d
from keyguard.core.addresses import MAX_ADDRESS_LENGTH, canonical_address
from keyguard.core.authn import authorize
from keyguard.core.bruteforce import BruteForceGuard
from keyguard.core.decision import Decision, Principal
from keyguard.core.errors import ErrorCode
from keyguard.core.expiry import expiry_header
from keyguard.core.keys import DEFAULT_FORMAT, KeyFormat
from keyguard.core.ratelimit import (
    DEFAULT_WINDOWS,
    RateDecision,
    RateState,
    WindowPlan,
    admitted_headers,
    admitted_headers_asgi,
    parse_windows,
    plan_for,
    rate_limit_headers,
    refused_headers,
)
from keyguard.core.ratelimit.fused import admit_function
from keyguard.core.records import KeyRecord
from keyguard.core.render import ProblemRenderer, request_id_from
from keyguard.core.scopes import Grants, all_of
from keyguard.core.verifier import _UNSET, Verifier
from keyguard.stores.memory import MemoryStore

PLANS = [
    plan_for(DEFAULT_WINDOWS),
    plan_for(parse_windows("5/second")),
    plan_for(parse_windows("5/second, 10/minute")),
    plan_for(parse_windows("2/second, 3/10s, 100/hour, 9999/day")),
]


# -- ProblemRenderer.render_asgi --------------------------------------------------------------
def _encoded(renderer: ProblemRenderer, decision: Decision, rid: str) -> tuple[object, ...]:
    """What the ASGI middleware sent before render_asgi: render(), then every pair encoded."""
    problem = renderer.render(decision, rid)
    pairs = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in problem.headers]
    return problem.status, pairs, problem.body


DENIALS = [v for v in vars(d).values() if isinstance(v, Decision) and not v.allowed] + [
    d.insufficient_scope(("agents:read",), "agents:read"),
    d.insufficient_scope(("a:b", "c:d"), "all_of(a:b, c:d)"),
    d.deny(
        ErrorCode.RATE_LIMITED,
        "Rate limit exceeded for this API key; retry in 3 s.",
        retry_after=3,
        headers=(("RateLimit-Policy", '"burst";q=20;w=10'), ("RateLimit", '"burst";r=0;t=3')),
    ),
    d.deny(ErrorCode.RATE_LIMITED, 'odd "detail" é \\ </script>', retry_after=1),
    Decision(
        False,
        None,
        ErrorCode.RATE_LIMITED,
        "with rate",
        (),
        5,
        (expiry_header(2e9),),
        (PLANS[0], (1, 2, 3, 4, 5, 6), True, True),
    ),
]
RENDERERS = [
    ProblemRenderer(),
    ProblemRenderer.platform_compatible(),
    ProblemRenderer(realm="r x", type_base='https://e/"q"/'),
    ProblemRenderer(body_hook=lambda body, _: {**body, "x": 1}),
    ProblemRenderer(body_hook=lambda body, _: b"raw", content_type="text/plain"),
]
REQUEST_IDS = ["abc123", "a.b-c:d_e", "0" * 16, "x" * 128, "\xff", '"q', request_id_from(None)]


@pytest.mark.parametrize("renderer", RENDERERS)
@pytest.mark.parametrize("decision", DENIALS, ids=lambda x: str(x.code))
def test_render_asgi_is_the_encoding_of_render(
    renderer: ProblemRenderer, decision: Decision
) -> None:
    for rid in REQUEST_IDS:
        for _ in range(2):  # the template is built on the first call, reused on the second
            assert renderer.render_asgi(decision, rid) == _encoded(renderer, decision, rid)


RAW_REQUEST_IDS = [
    None,
    b"",
    b"abc123",
    b"a.b-c:d_e",
    b"x" * 128,
    b"x" * 129,
    b"\xff",
    b'"q',
    b"ab cd",
    b"abc\n",
    b"\xb2",  # alphanumeric in latin-1 text ("\xb2".isalnum()), not in the id alphabet
]


def _carries_the_id_request_id_from_would(raw: bytes | str | None, rid: bytes | str) -> None:
    """A denial's request id is the caller's own only where request_id_from() keeps it, and
    otherwise a fresh one (16 lower-case hex digits) as request_id_from() makes."""
    text = rid.decode("latin-1") if isinstance(rid, bytes) else rid
    given = raw.decode("latin-1") if isinstance(raw, bytes) else raw
    if given is not None and text == given:
        assert request_id_from(raw) == given
    else:
        assert len(text) == 16, text
        assert set(text) <= set("0123456789abcdef"), text
        assert request_id_from(raw) != given


@pytest.mark.parametrize("renderer", RENDERERS)
@pytest.mark.parametrize("decision", DENIALS, ids=lambda x: str(x.code))
def test_asgi_messages_are_render_asgi_of_the_request_id(
    renderer: ProblemRenderer, decision: Decision
) -> None:
    for raw in RAW_REQUEST_IDS:
        for _ in range(2):  # the template is built on the first call, reused on the second
            start, body = renderer.asgi_messages(decision, raw)
            assert start.keys() == {"type", "status", "headers"}
            assert start["type"] == "http.response.start"
            assert body == {"type": "http.response.body", "body": body["body"]}
            rid = dict(start["headers"])[b"x-request-id"]
            _carries_the_id_request_id_from_would(raw, rid)
            status, headers, payload = renderer.render_asgi(decision, rid.decode())
            assert (start["status"], start["headers"], body["body"]) == (status, headers, payload)


def test_asgi_messages_make_a_fresh_header_list_per_denial() -> None:
    renderer = ProblemRenderer()
    first, _ = renderer.asgi_messages(d.INVALID, b"r1")
    second, _ = renderer.asgi_messages(d.INVALID, b"r1")
    assert first["headers"] == second["headers"]
    assert first["headers"] is not second["headers"]  # outer middleware may append to it
    first["headers"].append((b"x", b"y"))
    assert renderer.asgi_messages(d.INVALID, b"r1")[0]["headers"] == second["headers"]


TEXT_REQUEST_IDS = [None, *(r.decode("latin-1") for r in RAW_REQUEST_IDS if r is not None)]
TEXT_REQUEST_IDS += ["é", "ab\u2003c", "a" * 128 + "é"]  # alphanumeric text, not the id alphabet


@pytest.mark.parametrize("renderer", RENDERERS)
@pytest.mark.parametrize("decision", DENIALS, ids=lambda x: str(x.code))
def test_text_parts_are_render_of_the_request_id(
    renderer: ProblemRenderer, decision: Decision
) -> None:
    for raw in TEXT_REQUEST_IDS:
        for _ in range(2):  # the template is built on the first call, reused on the second
            status, headers, body = renderer.text_parts(decision, raw)
            assert type(headers) is list
            rid = dict(headers)["x-request-id"]
            _carries_the_id_request_id_from_would(raw, rid)
            problem = renderer.render(decision, rid)
            assert (status, headers, body) == (problem.status, list(problem.headers), problem.body)


def test_text_parts_make_a_fresh_header_list_per_denial() -> None:
    renderer = ProblemRenderer()
    _, first, _ = renderer.text_parts(d.INVALID, "r1")
    first.append(("x", "y"))
    assert ("x", "y") not in renderer.text_parts(d.INVALID, "r1")[1]


# -- compiled rate-limit header renderers -------------------------------------------------------
def _reference(
    plan: WindowPlan, counts: tuple[int, ...], ietf: bool, legacy: bool
) -> tuple[tuple[str, str], ...]:
    """The headers of an admitted request, spelled out: the most constraining window is the
    lowest remaining, ties going to the longer wait."""
    out: tuple[tuple[str, str], ...] = ()
    if ietf:
        out = (plan.header_policy, ("RateLimit", plan.header_ratelimit % counts))
    if legacy:
        pairs = [(counts[2 * i], counts[2 * i + 1]) for i in range(len(plan.windows))]
        best = min(range(len(pairs)), key=lambda i: (pairs[i][0], -pairs[i][1]))
        out += (
            ("X-RateLimit-Limit", plan.header_limits[best]),
            ("X-RateLimit-Remaining", str(pairs[best][0])),
            ("X-RateLimit-Reset", str(pairs[best][1])),
        )
    return out


numbers = st.one_of(st.integers(0, 30), st.integers(-2, 100_000), st.sampled_from([1023, 1024]))


# -- the fused admission (decision + consume + headers in one generated function) ----------------
FUSED_PLANS = [
    *PLANS,
    plan_for(parse_windows("3/hour, 4/day")),  # only bucketed windows: no sliding log
    plan_for(parse_windows("7/minute")),  # one exact window
    # The legacy remaining looked up unchecked up to a smallest limit of 1024 (at most 1023
    # left), checked above it.
    plan_for(parse_windows("1024/minute, 5000/day")),
    plan_for(parse_windows("1025/10s, 2000/minute")),
]
#: (microseconds to the next request, its cost): bursts, pauses, long gaps, a clock step back.
steps_st = st.lists(
    st.tuples(
        st.one_of(
            st.integers(0, 2_000_000),
            st.integers(0, 120_000_000),
            st.integers(-5_000_000, 0),
            st.sampled_from([0, 86_400_000_000, 3_600_000_000]),
        ),
        st.integers(1, 4),
    ),
    min_size=1,
    max_size=60,
)


@given(
    plan=st.sampled_from(FUSED_PLANS),
    steps=steps_st,
    ietf=st.booleans(),
    legacy=st.booleans(),
    text=st.booleans(),
)
def test_the_fused_admission_is_the_decision_then_its_headers(
    plan: WindowPlan, steps: list[tuple[int, int]], ietf: bool, legacy: bool, text: bool
) -> None:
    """admit(state, now, cost, ...) must be render(run(state, now, cost, True)): the same
    headers when admitted, the same refusal otherwise, and the same state after every step."""
    admit = admit_function(plan, text=text)
    fused, plain = RateState(), RateState()
    now = 1_700_000_000_000_000
    for dt, cost in steps:
        now += dt
        got = admit(fused, now, cost, ietf, legacy)
        decision = plan.run(plain, now, cost, True)
        if decision.allowed:
            render = admitted_headers if text else admitted_headers_asgi
            assert got == render(plan, decision.counts, ietf, legacy)
            assert type(got) is (tuple if text else list)
        else:
            assert type(got) is RateDecision
            assert got == decision
        assert fused == plain
        assert fused.last == plain.last


@pytest.mark.parametrize("text", [False, True], ids=["asgi", "text"])
def test_the_fused_remaining_is_range_tested_only_when_not_proven(text: bool) -> None:
    """The fused admission looks the legacy remaining up without a range test when the
    admission proves it in the table (every remaining below the smallest limit, <= 1024); the
    renderer for counts from elsewhere, and a plan whose smallest limit is above the table,
    keep the test — and both render what the reference renders."""
    import linecache

    def remaining_line(function: Any) -> str:
        lines = linecache.getlines(function.__code__.co_filename)
        (line,) = [line for line in lines if "rem = (REMAINING" in line]
        return line.strip()

    proven = plan_for(parse_windows("100/minute, 1024/hour"))
    unproven = plan_for(parse_windows("2000/minute, 5000/day"))
    assert remaining_line(admit_function(proven, text=text)) == "rem = (REMAINING, DIGITS[r])"
    assert "0 <= r < 1024" in remaining_line(admit_function(unproven, text=text))
    render = admitted_headers if text else admitted_headers_asgi
    render(proven, (99, 60, 1023, 3600), True, True)
    assert "0 <= r < 1024" in remaining_line(proven.text_render if text else proven.asgi_render)
    # Far down the unproven plan's window: a remaining above the table, formatted.
    state = RateState()
    admit = admit_function(unproven, text=text)
    headers = admit(state, 1_700_000_000_000_000, 3, True, True)
    assert type(headers) is not RateDecision
    remaining = dict(headers)["X-RateLimit-Remaining" if text else b"x-ratelimit-remaining"]
    assert remaining == ("1997" if text else b"1997")


def test_the_fused_admission_is_compiled_once_per_plan_and_kind() -> None:
    """One function per plan and kind, named after both: tracebacks and profiles
    (``profile_e2e.py`` charges ``<keyguard...`` code to keyguard) say what ran."""
    plan = plan_for(parse_windows("9/second, 11/minute"))
    assert admit_function(plan) is admit_function(plan) is plan.asgi_admit
    assert admit_function(plan, text=True) is plan.text_admit is not plan.asgi_admit
    named = "WindowPlan('9/second, 11/minute')>"
    assert plan.asgi_admit.__code__.co_filename == f"<keyguard.ratelimit asgi admit {named}"
    assert plan.text_admit.__code__.co_filename == f"<keyguard.ratelimit text admit {named}"


@given(
    plan=st.sampled_from(PLANS),
    data=st.data(),
    ietf=st.booleans(),
    legacy=st.booleans(),
)
def test_compiled_header_renderers_agree_with_the_reference(
    plan: WindowPlan, data: st.DataObject, ietf: bool, legacy: bool
) -> None:
    counts = tuple(
        data.draw(st.lists(numbers, min_size=2 * len(plan.windows), max_size=2 * len(plan.windows)))
    )
    expected = _reference(plan, counts, ietf, legacy)
    assert admitted_headers(plan, counts, ietf, legacy) == expected
    assert admitted_headers_asgi(plan, counts, ietf, legacy) == [
        (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in expected
    ]


@given(
    plan=st.sampled_from(PLANS),
    data=st.data(),
    ietf=st.booleans(),
    legacy=st.booleans(),
    retry=st.one_of(st.none(), st.integers(1, 90_000)),
)
def test_refused_headers_are_rate_limit_headers_without_retry_after(
    plan: WindowPlan, data: st.DataObject, ietf: bool, legacy: bool, retry: int | None
) -> None:
    n = len(plan.windows)
    counts = tuple(data.draw(st.lists(numbers, min_size=2 * n, max_size=2 * n)))
    mask = data.draw(st.integers(1, 2**n - 1))
    refusal = RateDecision(False, retry, plan, counts, mask)
    expected = tuple(
        h for h in rate_limit_headers(refusal, ietf=ietf, legacy=legacy) if h[0] != "Retry-After"
    )
    assert refused_headers(refusal, ietf, legacy) == expected
    assert refused_headers(refusal, ietf, legacy) == expected  # memoised: the same again
    assert refused_headers(RateDecision(False, 1, plan, counts, mask, unavailable=True)) == ()


# -- canonical addresses -------------------------------------------------------------------------
def _slow_canonical(text: str) -> str | None:
    """canonical_address before its fast path: ipaddress for everything."""
    text = text.strip()
    if not text or len(text) > MAX_ADDRESS_LENGTH:
        return None
    candidates = [text]
    if text.startswith("["):
        candidates.append(text[1:].partition("]")[0])
    elif text.count(":") == 1:
        candidates.append(text.partition(":")[0])
    for candidate in candidates:
        try:
            ip = ipaddress.ip_address(candidate)
        except ValueError:
            continue
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ip)
    return None


def _spellings(packed: bytes) -> list[str]:
    ip = ipaddress.ip_address(packed)
    family = socket.AF_INET if len(packed) == 4 else socket.AF_INET6
    out = [str(ip), socket.inet_ntop(family, packed), ip.exploded, f"[{ip}]:443", f"{ip}:80"]
    if isinstance(ip, ipaddress.IPv4Address):
        out += [f"::ffff:{ip}", f"::{ip}", ".".join(f"{b:03d}" for b in packed)]
    return out


@given(
    st.one_of(
        st.binary(min_size=4, max_size=4),
        st.binary(min_size=16, max_size=16),
        st.lists(st.sampled_from([0, 0, 0, 1, 255, 0xFFFF]), min_size=8, max_size=8).map(
            lambda parts: struct.pack("!8H", *parts)
        ),
    )
)
def test_canonical_address_fast_path_agrees_with_ipaddress(packed: bytes) -> None:
    for text in _spellings(packed):
        assert canonical_address(text) == _slow_canonical(text), text


@given(st.text(max_size=70))
def test_canonical_address_of_any_text_agrees_with_ipaddress(text: str) -> None:
    assert canonical_address(text) == _slow_canonical(text)


_quads = st.tuples(*[st.integers(0, 255)] * 4)


@given(
    st.one_of(
        st.lists(st.text(alphabet="0123456789x+- \n", max_size=4), min_size=1, max_size=6).map(
            ".".join
        ),
        _quads.map(lambda q: ".".join(map(str, q))),  # canonical
        _quads.map(lambda q: ".".join(f"{b:03d}" for b in q)),  # leading zeros
        _quads.map(lambda q: f"{q[0]}.{q[1]}.{q[2] * 256 + q[3]}"),  # three parts
    ),
    st.booleans(),
)
def test_dotted_text_agrees_with_ipaddress_with_either_ipv4_check(text: str, strict: bool) -> None:
    """IPv4 text read by a strict inet_pton is returned as it is; a platform whose parser is
    lax reads it and writes it back. Either way, what ipaddress says."""
    saved = addresses._STRICT_IPV4
    addresses._STRICT_IPV4 = strict and saved  # a lax platform can be tried, not a strict one
    try:
        assert canonical_address(text) == _slow_canonical(text), text
    finally:
        addresses._STRICT_IPV4 = saved


def test_this_platform_parses_ipv4_strictly() -> None:
    """Where CI runs (glibc), the fast check applies; if it did not, the test above still
    holds the slower one to ipaddress."""
    assert addresses._STRICT_IPV4


#: Spellings a lax inet_pton might read as IPv4: each alone must make the check say "lax".
LAX_IPV4 = [
    "01.2.3.4",
    "1.2.3.04",
    "1.2.3.00",
    "0x1.2.3.4",
    "1.2.3",
    "1..3.4",
    "1.2.3.4.5",
    " 1.2.3.4",
    "1.2.3.4 ",
    "+1.2.3.4",
    "1.2.3.256",
    "1.2.3.4\n",
    "１.2.3.4",
]


@pytest.mark.parametrize("spelling", LAX_IPV4)
def test_a_parser_reading_any_one_lax_spelling_is_found_lax(spelling: str) -> None:
    def parse(family: int, text: str) -> bytes:
        assert family == socket.AF_INET
        if text == spelling:
            return bytes(4)
        return socket.inet_pton(family, text)

    assert addresses._strict_ipv4_parser(socket.inet_pton)
    assert not addresses._strict_ipv4_parser(parse)


def test_a_parser_failing_with_value_error_is_strict_about_it() -> None:
    def parse(family: int, text: str) -> bytes:
        raise ValueError(text)

    assert addresses._strict_ipv4_parser(parse)


# -- the client a failure is counted against ---------------------------------------------------
class _Recorder:
    """A brute-force guard that notes whom each failure is counted against."""

    in_process = True

    def __init__(self) -> None:
        self.clients: list[str | None] = []

    def record_failure(self, client: str | None) -> int | None:
        self.clients.append(client)
        return None


_hosts = st.one_of(
    st.sampled_from(["203.0.113.7", "::1", "::ffff:10.0.0.1", " 10.0.0.2 ", "testclient", ""]),
    st.text(max_size=70),
)


@given(
    peer=st.one_of(
        st.none(),
        _hosts,
        st.tuples(_hosts, st.integers(0, 65535)),
        st.tuples(st.one_of(st.none(), st.integers()), st.integers(0, 65535)),
        st.lists(_hosts, max_size=2),
        st.just(()),
    ),
    forwarded=st.one_of(
        st.none(), _hosts, _hosts.map(lambda t: t.encode("utf-8")), st.just("10.9.9.9, 10.0.0.1")
    ),
    trusted=st.integers(0, 2),
)
def test_a_failure_is_counted_against_the_client_address_resolves_to(
    peer: Any, forwarded: Any, trusted: int
) -> None:
    """Verifier._failed() resolves an ASGI or WSGI peer inline; it must count against exactly
    the address _client() (client_address()) gives."""
    guard = _Recorder()
    verifier = Verifier(MemoryStore(), brute_force=guard, trusted_proxies=trusted)  # type: ignore[arg-type]
    verifier._failed(d.INVALID, _UNSET, peer, forwarded)
    assert guard.clients == [verifier._client(peer, forwarded)]


class _Resolving(Verifier):
    """Counts the calls of the general client-address rule (_client())."""

    def _client(self, peer: Any, forwarded_for: Any) -> str | None:
        self.resolved += 1
        return super()._client(peer, forwarded_for)


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "inline", "address"),
    [
        ("203.0.113.7", None, 0, True, "203.0.113.7"),  # WSGI's REMOTE_ADDR
        (("203.0.113.7", 5000), None, 0, True, "203.0.113.7"),  # an ASGI client
        (("203.0.113.7", 5000), b"198.51.100.1", 0, True, "203.0.113.7"),  # XFF, not trusted
        ("203.0.113.7", "198.51.100.1", 0, True, "203.0.113.7"),
        (("203.0.113.7", 5000), None, 1, True, "203.0.113.7"),  # trusted, but no XFF
        (("203.0.113.7", 5000), b"198.51.100.1", 1, False, "198.51.100.1"),  # trusted XFF
        ("203.0.113.7", "198.51.100.1", 1, False, "198.51.100.1"),
        (None, None, 0, False, None),  # no peer: the general rule (one shared bucket)
        ((), None, 0, False, None),
    ],
)
def test_a_plain_peer_is_resolved_inline_and_counted_against_its_address(
    peer: Any, forwarded: Any, trusted: int, inline: bool, address: str | None
) -> None:
    """The fast path of Verifier._failed(): a failure from a plain peer with no X-Forwarded-For
    to trust is counted without the general rule's call (the property test above holds the
    answer to _client()'s; this one holds the inline branch to being taken)."""
    guard = _Recorder()
    verifier = _Resolving(MemoryStore(), brute_force=guard, trusted_proxies=trusted)  # type: ignore[arg-type]
    verifier.resolved = 0
    assert verifier._failed(d.INVALID, _UNSET, peer, forwarded) is d.INVALID
    assert guard.clients == [address]
    assert verifier.resolved == (0 if inline else 1)


# -- key ids -----------------------------------------------------------------------------------
@given(st.one_of(st.text(max_size=80), st.builds(lambda: DEFAULT_FORMAT.generate().plaintext)))
def test_key_id_of_agrees_with_parse(value: str) -> None:
    for fmt in (DEFAULT_FORMAT, KeyFormat("sk", accept_prefixes=("kg",))):
        parsed = fmt.parse(value)
        assert fmt.key_id_of(value) == (None if parsed is None else parsed.key_id)


def test_key_id_of_a_real_key_and_of_near_misses() -> None:
    key = DEFAULT_FORMAT.generate()
    assert DEFAULT_FORMAT.key_id_of(key.plaintext) == key.key_id
    other = "x" if key.plaintext[-1] != "x" else "y"  # a different last character
    assert DEFAULT_FORMAT.key_id_of(key.plaintext[:-1] + other) is None  # checksum
    assert DEFAULT_FORMAT.key_id_of("sk" + key.plaintext[2:]) is None  # prefix


# -- the brute-force counter ------------------------------------------------------------------
class _Reference(BruteForceGuard):
    """record_failure as it was: every sub-window walked, whatever the count."""

    __slots__ = ()

    def record_failure(self, client: str | None) -> int | None:
        key = self.bucket(client)
        with self._lock:
            now, latest = self._now()
            current = math.floor(latest / self._slot)
            record = self._records.get(key)
            if record is None:
                counts = [0] * 8
            else:
                top, *counts = record
                for n in range(top + 1, min(current, top + 8) + 1):
                    counts[n % 8] = 0
            counts[current % 8] = min(counts[current % 8] + 1, self._tracked)
            self._records[key] = updated = [current, *counts]
            return self._retry_after(updated, now, latest)


@given(
    steps=st.lists(
        st.tuples(st.floats(0, 20, allow_nan=False), st.sampled_from(["a", "b", "::1", None])),
        max_size=120,
    ),
    threshold=st.integers(1, 12),
)
def test_record_failure_shortcut_matches_the_full_walk(
    steps: list[tuple[float, str | None]], threshold: int
) -> None:
    now = [1000.0]
    clock = lambda: now[0]  # noqa: E731 - a clock the test moves
    fast = BruteForceGuard(threshold, 60.0, clock=clock)
    slow = _Reference(threshold, 60.0, clock=clock)
    for step, client in steps:
        now[0] += step
        assert fast.record_failure(client) == slow.record_failure(client)
        assert fast.is_blocked(client) == slow.is_blocked(client)


# -- 403s --------------------------------------------------------------------------------------
def test_scope_denials_are_built_once_per_requirement_object() -> None:
    record = KeyRecord(key_id="a" * 12, name="n", digest="sha256$" + "0" * 64)
    principal = Principal("a" * 12, "n", None, Grants(frozenset({"tasks:read"})), record)
    ab, ba = all_of("agents:read", "agents:write"), all_of("agents:write", "agents:read")
    assert ab == ba  # equal requirements, presented in another order
    first = authorize(principal, ab)
    assert first is authorize(principal, ab)  # cached
    other = authorize(principal, ba)
    assert first is not None
    assert other is not None
    assert first.required == ("agents:read", "agents:write")
    assert other.required == ("agents:write", "agents:read")  # each keeps its own order
    assert first == d.insufficient_scope(ab.scopes, ab.describe())


def test_extra_headers_of_a_new_tuple_are_never_those_of_an_old_one() -> None:
    """Encodings are memoised by the identity of the headers tuple: a tuple built afresh for
    every denial, with other values each time (ids of freed tuples are reused at once), must
    still be sent as itself."""
    renderer = ProblemRenderer()
    for n in range(200):
        extra = (("RateLimit", f'"burst";r=0;t={n}'), ("X-Other", str(n)))
        decision = d.deny(ErrorCode.RATE_LIMITED, "slow down", retry_after=1, headers=extra)
        _status, headers, _body = renderer.render_asgi(decision, "abc")
        assert (b"ratelimit", f'"burst";r=0;t={n}'.encode()) in headers
        assert (b"x-other", str(n).encode()) in headers
        del extra, decision


# -- memoised 429 decisions ------------------------------------------------------------------------
def test_memoised_refusals_are_the_decisions_they_stand_for() -> None:
    from keyguard.core.ratelimit import MemoryRateLimiter
    from keyguard.core.verifier import Verifier
    from keyguard.stores.memory import MemoryStore

    clock = [1_000.0]
    limiter = MemoryRateLimiter(clock=lambda: clock[0])
    owner_windows = parse_windows("4/minute")
    v = Verifier(
        MemoryStore(),
        rate_limits="2/10s, 3/minute",
        owner_rate_limits=owner_windows,
        limiter=limiter,
    )
    record = KeyRecord(key_id="k" * 12, name="n", digest="sha256$00", owner="acme")
    principal = Principal(record.key_id, record.name, record.owner, Grants(()), record)
    admitted = Decision(True, principal)
    seen: dict[tuple[object, ...], Decision] = {}
    for step in range(40):
        clock[0] += 0.7
        rd = v._hit(limiter, principal, 1 + step % 2)
        decision = v._limited(admitted, rd)
        if rd.allowed:
            continue
        assert rd.retry_after is not None
        by_owner = rd.violated_mask >> len(v._windows(principal)) != 0
        whose = "this API key's owner" if by_owner else "this API key"
        expected = Decision(
            False,
            None,
            ErrorCode.RATE_LIMITED,
            f"Rate limit exceeded for {whose}; retry in {rd.retry_after} s.",
            (),
            rd.retry_after,
            refused_headers(rd, True, True),
            None,
        )
        assert decision == expected
        again = v._limited(admitted, rd)
        assert again is decision  # memoised: the same object for the same refusal
        key = (expected.detail, expected.extra_headers)
        if key in seen:
            assert seen[key] is decision
        seen[key] = decision
    assert len(seen) >= 3
    assert {d.detail.split(" for ")[1].split(";")[0] for d in seen.values()} == {
        "this API key",
        "this API key's owner",
    }


@pytest.mark.parametrize("renderer", RENDERERS[:2])
def test_equal_denials_of_distinct_identity_render_alike(renderer: ProblemRenderer) -> None:
    for decision in DENIALS:
        twin = Decision(*decision)  # equal, another object
        assert twin is not decision
        for rid in REQUEST_IDS[:3]:
            assert renderer.render_asgi(twin, rid) == renderer.render_asgi(decision, rid)
            assert renderer.render_asgi(decision, rid) == _encoded(renderer, decision, rid)
