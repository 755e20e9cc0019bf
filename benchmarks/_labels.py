"""Row labels the goals (``goals.py``) and the comparisons refer to, in one place.

A label is a row's identity across runs (``compare.py`` matches rows by group and label):
rename one only together with its goal, and expect the next comparison to skip it.
"""

from __future__ import annotations

# -- group "asgi": Starlette ------------------------------------------------------------------
S_BARE = "Starlette, bare"
S_FLOOR = "Starlette + hand-written ASGI guard (floor)"
S_KG_FULL = "Starlette + keyguard: full path (auth + scope + 3 windows + headers)"
S_KG_NO_HEADERS = "Starlette + keyguard: full path, rate-limit headers off"
S_KG_AUTH = "Starlette + keyguard: auth + scope only"
S_KG_STUB = "Starlette + keyguard: full path, limiter stub (one constant decision)"
S_AUTH = "Starlette + AuthenticationMiddleware + requires"
S_AUTH_SLOWAPI = "Starlette + AuthenticationMiddleware + slowapi"
# whole-request denials (the app never runs)
FLOOR_401_MALFORMED = "floor: 401, malformed key"
FLOOR_401_UNKNOWN = "floor: 401, unknown id"
FLOOR_403 = "floor: 403, scope missing"
FLOOR_429 = "floor: 429, burst spent"
KG_401_MALFORMED = "keyguard: 401, malformed key"
KG_401_UNKNOWN = "keyguard: 401, unknown id"
KG_401_NO_KEY = "keyguard: 401, no key"
KG_403 = "keyguard: 403, scope missing"
KG_429 = "keyguard: 429, burst spent"
KG_429_ALONE = "keyguard middleware alone (no framework): 429"
S_AUTH_401 = "Starlette AuthenticationMiddleware: 401, unknown key (on_error)"
S_AUTH_403 = "Starlette AuthenticationMiddleware + requires: 403, no key"
SLOWAPI_429 = "Starlette auth + slowapi: 429"

# -- group "asgi": FastAPI --------------------------------------------------------------------
F_BARE = "FastAPI, bare"
F_FLOOR_MIDDLEWARE = "FastAPI + hand-written ASGI guard middleware (floor)"
F_FLOOR_DEPENDENCY = "FastAPI + hand-written dependency (floor)"
F_KG_DEPENDENCY = "FastAPI + keyguard dependency guard.require() (documented), full path"
F_KG_DEPENDENCY_AUTH = "FastAPI + keyguard dependency, auth + scope only"
F_KG_DEPENDENCY_STUB = "FastAPI + keyguard dependency, full path, limiter stub"
F_KG_MIDDLEWARE = "FastAPI + keyguard middleware, full path"
F_API_KEY = "FastAPI + APIKeyHeader dependency"
F_API_KEY_SLOWAPI = "FastAPI + APIKeyHeader dependency + slowapi"

# -- group "wsgi" ----------------------------------------------------------------------------
W_BARE = "raw WSGI app, bare"
W_FLOOR = "raw WSGI + hand-written WSGI guard (floor)"
W_KG_FULL = "raw WSGI + keyguard WSGI middleware, full path"
W_KG_AUTH = "raw WSGI + keyguard WSGI middleware, auth + scope only"
W_FLOOR_401 = "raw WSGI floor: 401, unknown id"
W_FLOOR_403 = "raw WSGI floor: 403, scope missing"
W_FLOOR_429 = "raw WSGI floor: 429, burst spent"
W_KG_401 = "raw WSGI keyguard: 401, unknown id"
W_KG_403 = "raw WSGI keyguard: 403, scope missing"
W_KG_429 = "raw WSGI keyguard: 429, burst spent"
FL_BARE = "Flask, bare"
FL_FLOOR = "Flask + hand-written WSGI guard (floor)"
FL_KG_WSGI = "Flask + keyguard WSGI middleware, full path"
FL_KG_EXTENSION = "Flask + KeyGuard extension, full path"
DJ_BARE = "Django, bare"
DJ_KG_WSGI = "Django + keyguard WSGI middleware, full path"
DJ_KG_MIDDLEWARE = "Django + keyguard middleware, full path"

# -- group "redis" ---------------------------------------------------------------------------
R_PING = "PING, sync (redis.Redis)"
R_HIT = "RedisRateLimiter.hit, sync"
R_APING = "PING, async (redis.asyncio.Redis)"
R_AHIT = "RedisRateLimiter.ahit, async"
R_STORE_PING = "PING, sync (same run as the store rows)"
R_STORE_MISS = "Verifier.authenticate, cache miss, RedisStore"

# -- group "scale" ---------------------------------------------------------------------------
SC_BARE_FEW = "trivial ASGI app, 10 keys' requests"
SC_BARE_MANY = "trivial ASGI app, many keys' requests"
SC_KG_FEW = "keyguard full path, 10 keys round-robin"
SC_KG_MANY = "keyguard full path, many keys round-robin"
SC_FLOOR_FEW = "hand-written ASGI guard (floor), 10 keys round-robin"
SC_FLOOR_MANY = "hand-written ASGI guard (floor), many keys round-robin"

# -- group "revocation" ----------------------------------------------------------------------
RV_MAX = "revocation latency, slowest of 4 workers"
RV_ALL = "revocation latency, every worker"

# -- group "e2e" -----------------------------------------------------------------------------
E_BARE = "bare Starlette"
E_FLOOR = "Starlette + hand-written ASGI guard (floor)"
E_KG = "Starlette + keyguard full path"
E_KG_IETF = "Starlette + keyguard full path, IETF headers only"
E_SLOWAPI = "Starlette auth + slowapi"
