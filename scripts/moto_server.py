"""Starts moto's server (the AWS emulator of the local stack and the tests)
with one change: JSONPath expressions are parsed once, not once per use.

moto hands every event an EventBridge rule forwards to a target through
its input template, which parses eight JSONPath expressions per event and
target; jsonpath-ng builds a new parser (its yacc tables) for each parse.
That is about 200 ms of CPU per forwarded event on the 2-core machine, so
a few tests publishing through a bus at once saturate moto's one Python
thread and the bus calls time out. The expressions are the same few every
time, and a parsed expression is not changed by using it, so a cache
keeps moto's behaviour and takes the cost away.

Arguments are moto.server's own (`-H 127.0.0.1 -p 5000`).
"""

import functools
import sys

try:
    import jsonpath_ng.ext
except ImportError:  # moto without its EventBridge extras: nothing to cache
    jsonpath_ng = None

if jsonpath_ng is not None:
    # moto imports `parse` from this module inside the function that uses
    # it, so replacing the module's attribute before the server starts is
    # enough.
    jsonpath_ng.ext.parse = functools.lru_cache(maxsize=1024)(jsonpath_ng.ext.parse)

from moto.server import main  # noqa: E402  (after the patch, on purpose)

if __name__ == "__main__":
    sys.exit(main())
