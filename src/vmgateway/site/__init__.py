"""The clinic's form: filling it in (`vmgateway site init`), checking it, printing it."""
