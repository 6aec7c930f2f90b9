# This Source Code Form is subject to the terms of the Mozilla Public
# License, v. 2.0. If a copy of the MPL was not distributed with this
# file, You can obtain one at http://mozilla.org/MPL/2.0/.
"""Load a Buildbot master's workers from slavealloc.

slavealloc knows which workers may connect to each master and the password
each one logs in with: the enabled slaves of the master's pool (any of them
may be balanced onto it) and every enabled slave locked to it, each with the
password its buildbot.tac carries. This module asks slavealloc for that list
(``GET {url_base}/api/masters/{master}/workers``) so that ``master.cfg``
keeps no copy of the fleet or of its passwords. Standard library only;
Python 3 (and importable by Python 2.7).

In ``master.cfg``, with this file beside it (or anywhere on ``sys.path``)::

    import slavealloc_workers

    c['workers'] = slavealloc_workers.workers(
        'https://slavealloc.example.com',      # the daemon's base URL, not /api
        'bm09',                                # this master's nickname (or masterid)
        token_file='/etc/buildbot/slavealloc.token',
        cache='/var/lib/buildbot/slavealloc-workers.json')
    names = [w.workername for w in c['workers']]
    c['builders'] = [util.BuilderConfig(name='...', workernames=names, ...)]

``fetch()`` takes the same arguments and returns plain ``(name, password)``
pairs instead, for a master.cfg that builds its workers itself (say with
``max_builds`` or properties).

The token
    Worker lists hold passwords, so slavealloc answers them only to a token
    with the ``master`` scope (or ``admin``); give each master its own, in
    slavealloc's configuration::

        [tokens.bm09]
        secret = "a-long-random-string"
        scope = "master"

    A ``master`` token reads worker lists and does nothing else: it writes
    nothing and sees no password elsewhere. Keep it in a file only the
    buildbot user can read and pass ``token_file`` (its content is stripped
    of surrounding whitespace), rather than ``token`` in master.cfg.

The cache
    With ``cache=PATH``, every successful fetch is written to PATH
    atomically (a temporary file in the same directory, then a rename), with
    mode 0600: it holds passwords. When slavealloc cannot be reached, or
    answers an error (a bad token, an unknown master, a server error, a
    malformed answer), the list cached by the last successful fetch is used
    and a line saying so, with the error and the cache's age, goes to the
    master's log (twisted's log when twisted is importable, else stderr).
    Without a cache, or when the cache is unusable (missing, unreadable, or
    written for another master or URL), the error is raised as a
    ``WorkerListError`` with a message saying what went wrong: a master
    never silently starts with no workers. A failure to write the cache is
    logged and does not stop the master.

Refreshing
    master.cfg runs at every start and every ``buildbot reconfig``, so a
    reconfig fetches the list again: after adding, enabling, moving or
    locking slaves, or rotating a pool's password, ``buildbot reconfig``
    the masters concerned. Workers already connected keep their connection.

Transport
    https is verified against the system's CA store (urllib's default
    context); redirects are refused, since the token would follow them.
    A proxy named in the environment (``https_proxy``...) is used, as urllib
    does.
"""

from __future__ import print_function

import json
import os
import socket
import sys
import tempfile
import time

try:  # Python 3
    from http.client import HTTPException
    from urllib.error import HTTPError, URLError
    from urllib.parse import quote
    from urllib.request import HTTPRedirectHandler, Request, build_opener

    _STRINGS = (str,)
except ImportError:  # Python 2.7
    from httplib import HTTPException  # noqa: F401
    from urllib import quote  # noqa: F401
    from urllib2 import HTTPError, HTTPRedirectHandler, Request, URLError, build_opener  # noqa: F401

    _STRINGS = (str, unicode)  # noqa: F821

__all__ = ["WorkerListError", "fetch", "workers"]

#: What the cache file says it is, so that another JSON file is never taken
#: for one.
CACHE_FORMAT = "slavealloc-workers-cache"
CACHE_VERSION = 1


class WorkerListError(Exception):
    """No worker list: slavealloc failed and no usable cache was there.

    The message says what failed (the URL, the HTTP status and slavealloc's
    own error, or the network error) and, when a cache was given, why it
    could not be used.
    """


def fetch(url_base, master, token=None, token_file=None, timeout=10, cache=None):
    """The workers of ``master`` as a list of ``(name, password)`` pairs,
    sorted by name: from slavealloc, else from ``cache``.

    ``url_base`` is the daemon's base URL (``https://slavealloc.example.com``,
    or ``https://tools.example.com/slavealloc`` behind a path prefix);
    ``master`` the master's nickname, or its masterid. Give the token as
    ``token`` or, better, ``token_file``. ``timeout`` bounds each network
    operation, in seconds.

    Raises ``WorkerListError`` when neither slavealloc nor the cache gives a
    list, and ``ValueError`` for arguments that can never work.
    """
    url = _url(url_base, master)
    secret = _token(token, token_file)
    try:
        answer = _parse(_get(url, secret, timeout), url)
    except WorkerListError as error:
        if cache is None:
            raise
        return _from_cache(cache, url, error)
    if answer["missing_password"]:
        _log(
            "slavealloc lists %d slave(s) of master %s without a password row; they cannot "
            "boot until one is added: %s" % (
                len(answer["missing_password"]), answer.get("master", master),
                ", ".join(answer["missing_password"]))
        )
    if not answer["workers"]:
        _log("slavealloc lists no workers for master %s (%s)" % (answer.get("master", master), url))
    else:
        _log("%d workers for master %s from %s" % (len(answer["workers"]), answer.get("master", master), url))
    if cache is not None:
        try:
            _write_cache(cache, url, answer)
        except (IOError, OSError) as e:
            _log("cannot write the worker cache %s (the list is used all the same): %s" % (cache, e))
    return _pairs(answer)


def workers(url_base, master, token=None, token_file=None, timeout=10, cache=None):
    """``fetch()``'s list as ``buildbot.plugins.worker.Worker(name, password)``
    objects, for ``c['workers']``. Buildbot is imported only here, so the
    rest of this module works without it."""
    from buildbot.plugins import worker

    return [
        worker.Worker(name, password)
        for name, password in fetch(url_base, master, token, token_file, timeout, cache)
    ]


def _url(url_base, master):
    if not isinstance(url_base, _STRINGS) or not url_base.startswith(("http://", "https://")):
        raise ValueError("url_base must be an http:// or https:// URL, not %r" % (url_base,))
    name = master if isinstance(master, _STRINGS) else str(master)
    if not name:
        raise ValueError("master must be a nickname or a masterid, not %r" % (master,))
    if not isinstance(name, str):  # Python 2's unicode: quote() wants bytes
        name = name.encode("utf-8")
    return "%s/api/masters/%s/workers" % (url_base.rstrip("/"), quote(name, safe=""))


def _token(token, token_file):
    if token is not None and token_file is not None:
        raise ValueError("give token or token_file, not both")
    if token_file is None:
        return token.strip() if token is not None else None
    try:
        with open(token_file) as f:
            secret = f.read().strip()
        mode = os.stat(token_file).st_mode
    except (IOError, OSError) as e:
        # Not slavealloc's failure, so no cache hides it: fix the file.
        raise WorkerListError("cannot read the slavealloc token file %s: %s" % (token_file, e))
    if not secret:
        raise WorkerListError("the slavealloc token file %s is empty" % token_file)
    if mode & 0o077:
        _log("the slavealloc token file %s can be read by others (mode %o); chmod 600 it" % (
            token_file, mode & 0o777))
    return secret


class _NoRedirects(HTTPRedirectHandler):
    """slavealloc never redirects this route: a redirect is a proxy or a
    misconfigured URL, and following it would hand the token over."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        raise WorkerListError(
            "slavealloc at %s answered a redirect (%d) to %s; not followed, since the token "
            "would go along: fix url_base" % (req.get_full_url(), code, newurl)
        )


def _get(url, token, timeout):
    """The answer's body, or ``WorkerListError`` saying why there is none."""
    request = Request(url, headers={"Accept": "application/json", "User-Agent": "slavealloc_workers"})
    if token:
        request.add_header("Authorization", "Bearer %s" % token)
    try:
        response = build_opener(_NoRedirects).open(request, timeout=timeout)
        try:
            return response.read()
        finally:
            response.close()
    except HTTPError as e:
        raise WorkerListError("slavealloc answered %d for %s: %s" % (e.code, url, _error_of(e)))
    except URLError as e:
        raise WorkerListError("cannot reach slavealloc at %s: %s" % (url, e.reason))
    except (HTTPException, socket.error, socket.timeout, IOError, OSError) as e:
        raise WorkerListError("cannot reach slavealloc at %s: %s" % (url, e or type(e).__name__))


def _error_of(http_error):
    """slavealloc's own reason (``{"success": false, "error": "..."}``),
    else the HTTP reason phrase."""
    try:
        body = json.loads(http_error.read().decode("utf-8"))
        if isinstance(body, dict) and isinstance(body.get("error"), _STRINGS):
            return body["error"]
    except Exception:  # any unreadable body: the status still says enough
        pass
    return http_error.reason or "no reason given"


def _parse(body, source):
    """The checked answer: a dict whose ``workers`` are ``{"name",
    "password"}`` dicts of strings and whose ``missing_password`` is a list
    of names."""
    try:
        answer = json.loads(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise WorkerListError("the worker list from %s is not JSON: %s" % (source, e))
    if not isinstance(answer, dict) or not isinstance(answer.get("workers"), list):
        raise WorkerListError("the worker list from %s has no \"workers\" list" % source)
    for w in answer["workers"]:
        if not (isinstance(w, dict) and isinstance(w.get("name"), _STRINGS)
                and isinstance(w.get("password"), _STRINGS) and w["name"]):
            raise WorkerListError("the worker list from %s has a malformed worker: %r" % (
                source, w.get("name") if isinstance(w, dict) else w))
    missing = answer.setdefault("missing_password", [])
    if not isinstance(missing, list) or not all(isinstance(n, _STRINGS) for n in missing):
        raise WorkerListError("the worker list from %s has a malformed missing_password" % source)
    return answer


def _pairs(answer):
    return sorted((w["name"], w["password"]) for w in answer["workers"])


def _write_cache(path, url, answer):
    """Writes the cache so that a reader only ever sees a whole file: a
    temporary file beside it (created 0600 by mkstemp, whatever the umask),
    flushed to disk, then renamed over it."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump({
                "format": CACHE_FORMAT,
                "version": CACHE_VERSION,
                "url": url,
                "fetched_at": time.time(),
                "answer": answer,
            }, f, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temporary, 0o600)
        os.rename(temporary, path)  # atomic on POSIX, and replaces the old file
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


def _from_cache(path, url, error):
    try:
        with open(path) as f:
            cached = json.load(f)
    except (IOError, OSError, ValueError) as e:
        raise WorkerListError("%s; and the worker cache %s is unusable: %s" % (error, path, e))
    if not isinstance(cached, dict) or cached.get("format") != CACHE_FORMAT:
        raise WorkerListError("%s; and %s is not a worker cache" % (error, path))
    if cached.get("url") != url:
        raise WorkerListError("%s; and the worker cache %s holds the list from %s, not %s" % (
            error, path, cached.get("url"), url))
    try:
        answer = _parse(json.dumps(cached.get("answer")).encode("utf-8"), path)
    except WorkerListError as e:
        raise WorkerListError("%s; and %s" % (error, e))
    fetched = cached.get("fetched_at")
    age = "%.0f s old" % (time.time() - fetched) if isinstance(fetched, (int, float)) else "of unknown age"
    _log("%s; using the %d workers cached in %s (%s)" % (error, len(answer["workers"]), path, age))
    return _pairs(answer)


def _log(message):
    """One line in the master's log: twisted's when it is there (as in a
    running master), else stderr."""
    line = "slavealloc_workers: %s" % message
    try:
        from twisted.python import log
    except ImportError:
        print(line, file=sys.stderr)
    else:
        log.msg(line)
