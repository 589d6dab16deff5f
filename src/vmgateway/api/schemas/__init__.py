"""The API's answers as types: what `docs/openapi.json` promises and a generated client returns,
one module per concept (status, feed, transfers, lab, worklist, site, settings; `base` for what
they share).

Each route declares one of these as its response model, so FastAPI checks every answer against
it before it leaves. A route answers with the store's records (`vmgateway.records`) as they are:
each model reads a record's attributes field for field (`from_attributes`), which makes this the
one place where what was kept becomes JSON. Fields are closed (`extra="forbid"`), and
`tests/test_api.py` holds each model's fields to its record's, so a field the store starts to
return but nobody declared here fails the tests at once rather than being served undocumented
(or silently dropped). Times are Unix times in seconds (UTC), as the journal keeps them.
"""
