"""`vmgateway doctor`: one command a technician runs on the box; every check says OK, WARN or
FAIL and, when not OK, what to do about it."""
